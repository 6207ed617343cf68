"""Numbers beside the salience pictures, from a run's history alone (pure functions, no model):

- `agreement`: per layer, how well the policy's score at its evictions agrees with a reference salience per
  token (the teacher's SSE, or the oracle's hindsight attention from a full-cache run of the same noise):
  Spearman's rank correlation over the tokens cached at each eviction, and the top-25% recall (the share of
  the reference's top quarter that the policy also ranks in its top quarter), averaged over evictions.
- `departures`: per prompted object, when its tokens left the cache, per layer: an object's tokens in a
  frame are the token cells within its radius (sqrt(area / pi) + half a cell) of its centroid, in every
  frame where the evaluator finds it (backend.consistency.object_tracks); it has left a layer at the chunk
  that evicted the last of those tokens.
"""

from __future__ import annotations

import numpy as np

from .history import RunHistory
from .signals import rank01

TOP = 0.25


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long vectors (average ranks for ties); NaN below 3 values."""
    if len(a) < 3:
        return float("nan")
    ra, rb = rank01(np.asarray(a, np.float64)).astype(np.float64), rank01(np.asarray(b, np.float64)).astype(np.float64)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def top_recall(score: np.ndarray, ref: np.ndarray, share: float = TOP) -> float:
    """Share of the reference's top `share` of tokens that the score also puts in its top `share`."""
    k = max(int(round(share * len(score))), 1)
    if len(score) < 4:
        return float("nan")
    top_s = set(np.argsort(-score, kind="stable")[:k].tolist())
    top_r = np.argsort(-ref, kind="stable")[:k]
    return float(np.mean([i in top_s for i in top_r]))


def agreement(h: RunHistory, reference: np.ndarray) -> list[dict]:
    """Per layer: mean Spearman and top-25% recall of the policy's score against `reference` (L, n_tokens)
    dense over token ids (NaN = no value), over the evictions that scored; and how many evictions."""
    rows = []
    for layer in range(h.n_layer):
        rho, rec = [], []
        for snap in h.snapshots:
            scores = (snap.values.get("score") or [None] * h.n_layer)[layer]
            if scores is None:
                continue
            ids = snap.ids[layer]
            ref = reference[layer, ids]
            ok = np.isfinite(ref) & np.isfinite(scores)
            if ok.sum() < 4:
                continue
            rho.append(spearman(scores[ok], ref[ok]))
            rec.append(top_recall(scores[ok], ref[ok]))
        rows.append({"layer": layer, "spearman": _mean(rho), "top-25% recall": _mean(rec), "evictions": len(rho)})
    return rows


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def dense_reference(
    h: RunHistory, per_frame_token: np.ndarray | None = None, per_id: list[np.ndarray] | None = None
) -> np.ndarray:
    """(L, n_tokens) over token ids from either a frame-token array (L, n_frames * T) (the teacher) or dense
    per-layer arrays over ids (the oracle's hindsight scores); NaN where there is no value."""
    out = np.full((h.n_layer, h.n_tokens), np.nan, np.float32)
    if per_frame_token is not None:
        out[:, h.n_prompt :] = per_frame_token
    for layer, arr in enumerate(per_id or []):
        n = min(len(arr), h.n_tokens)
        out[layer, :n] = arr[:n]
    return out


def object_tokens(h: RunHistory, det, frame: int, pixels_per_cell: float) -> np.ndarray:
    """Token ids of `frame` covered by a detection (centroid and area in pixels)."""
    g = h.grid
    radius = np.sqrt(det.area / np.pi) + pixels_per_cell / 2
    centres = (np.arange(g) + 0.5) * pixels_per_cell
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    hit = np.hypot(yy - det.y, xx - det.x) <= radius  # (g, g)
    return h.n_prompt + frame * h.tokens_per_frame + np.flatnonzero(hit)


def departures(h: RunHistory, tracks: list[dict], frame_size: int, upto_chunk: int | None = None) -> list[dict]:
    """Per prompted object: the share of frames it is found in, and per layer the chunk at which its last
    token left the cache, or how many of its tokens are still cached (at the end, or at `upto_chunk`)."""
    now = h.chunks_done - 1 if upto_chunk is None else upto_chunk
    rows = []
    for tr in tracks:
        ids = [object_tokens(h, det, t, frame_size / h.grid) for t, det in tr["frames"].items() if h.chunk_of(t) <= now]
        row = {
            "object": tr["label"],
            "found in": f"{tr['found_share']:.0%}" if np.isfinite(tr["found_share"]) else "-",
            "frames seen": len(ids),
        }
        ids = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        for layer in range(h.n_layer):
            ev = h.evicted_at[layer, ids]
            gone = (ev >= 0) & (ev <= now)
            if not len(ids):
                row[f"L{layer}"] = "never seen"
            elif gone.all():
                row[f"L{layer}"] = f"left at chunk {int(ev.max())}"
            else:
                row[f"L{layer}"] = f"{int((~gone).sum())} of {len(ids)} tokens cached"
        rows.append(row)
    return rows
