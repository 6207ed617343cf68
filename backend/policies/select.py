"""The selector (`Selector`): which tokens a layer keeps, given scores, the protected tokens and a budget, at
token, frame or strata granularity (kvpress's `ScorerPress` top-k, with video's frame structure). Index
bookkeeping runs in numpy on views of the tensors: it runs on every layer after every commit, on a few thousand
tokens, where a torch op's fixed cost is most of the work; every decision is the same as torch's (tests against
plain loops).
"""

from __future__ import annotations

import numpy as np
import torch


def _np(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array (shared memory, no copy)."""
    return t.detach().numpy()


def _order_desc(values: np.ndarray) -> np.ndarray:
    """Positions of `values` best first, ties in their given order, NaN first: torch's stable descending
    sort (numpy's argsort would put NaN last; NaN has no rank, so that rare case goes through torch)."""
    if np.isnan(values).any():
        return torch.sort(torch.from_numpy(values), descending=True, stable=True).indices.numpy()
    return np.argsort(-values, kind="stable")


def _protected_within(protected: torch.Tensor, budget: int) -> tuple[np.ndarray, int]:
    """The protected mask as numpy and its count, refusing a budget below it."""
    prot = _np(protected)
    n_prot = int(prot.sum())
    if n_prot > budget:
        raise ValueError(
            f"budget {budget} tokens is below the {n_prot} protected tokens "
            "(prompt anchors + newest chunk); raise the budget"
        )
    return prot, n_prot


def select(
    scores: torch.Tensor, protected: torch.Tensor, budget: int, token_id: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep every protected token plus the highest-scored others, `budget` tokens in all (ties broken
    towards newer tokens: higher `token_id`, else later positions). Returns sorted cache indices.

    The index bookkeeping of selection runs in numpy on views of the tensors: it runs on every layer after
    every commit, on a few thousand tokens, where a torch op's fixed cost (several microseconds) is most of
    the work; numpy's is a fraction of it, and every decision is the same (tests against plain loops)."""
    prot, n_prot = _protected_within(protected, budget)
    free = np.flatnonzero(~prot)
    k = budget - n_prot
    keep = prot.copy()
    if k > 0 and len(free):
        values = _np(scores.float())[free]
        age = None if token_id is None else _np(token_id)[free]
        keep[_top_newest(values, free, k, age)] = True
    return torch.from_numpy(np.flatnonzero(keep))


def top_newest(values: torch.Tensor, idx: torch.Tensor, k: int, age: torch.Tensor | None = None) -> torch.Tensor:
    """The k entries of idx with the highest values, ties going to the newest (highest `age`, a token id;
    by default the position in idx): what a stable descending sort of the newest-first order keeps, done in
    O(n) with the k-th value as a threshold (the eviction runs every chunk on a few thousand tokens)."""
    return torch.from_numpy(_top_newest(_np(values), _np(idx), k, None if age is None else _np(age)))


def _top_newest(values: np.ndarray, idx: np.ndarray, k: int, age: np.ndarray | None = None) -> np.ndarray:
    """`top_newest` on numpy arrays (ages distinct, as token ids and positions are)."""
    if k >= len(idx) or k <= 0:
        return idx if k > 0 else idx[:0]
    age = np.arange(len(idx)) if age is None else age
    if np.isnan(values).any():  # NaN has no rank: a full sort
        newest_first = np.argsort(-age, kind="stable")
        return idx[newest_first[_order_desc(values[newest_first])[:k]]]
    thr = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest
    chosen = values > thr
    ties = np.flatnonzero(values == thr)
    need = k - int(chosen.sum())  # >= 1: thr itself is among the top k
    if need < len(ties):  # the newest of the tied
        ties = ties[np.argpartition(-age[ties], need - 1)[:need]]
    chosen[ties] = True
    return idx[chosen]


def select_frames(
    scores: torch.Tensor, protected: torch.Tensor, frame: torch.Tensor, budget: int, strata: bool = False
) -> torch.Tensor:
    """Frame granularity: keep every protected token, then whole frames by mean score (newer on ties)
    while they fit in the budget. Returns sorted cache indices.

    strata: first the best frame of each of K equal spans of frame index over the evictable frames (K =
    the frames that fit), then the rest by score: the kept history stays spread over time, as a uniform
    subsample's is, and salience picks within each span (see `strata_first`).

    Frame indices address per-frame sums directly (no unique / searchsorted / isin), and the bookkeeping
    runs in numpy (see `select`); the per-frame sums stay a torch float32 index_add, as before."""
    prot, n_prot = _protected_within(protected, budget)
    free = ~prot
    fr = _np(frame)
    ff = fr[free]
    if len(ff) == 0:
        return torch.from_numpy(np.flatnonzero(prot))
    lo = int(ff.min())  # frames are >= 0; prompt tokens are protected
    ff = ff - lo
    counts = np.bincount(ff)  # (F,) tokens per frame index
    sums = torch.zeros(len(counts)).index_add_(0, torch.from_numpy(ff), scores[torch.from_numpy(free)].float())
    frames = np.flatnonzero(counts)  # ascending frame index (minus lo)
    cnt = counts[frames]
    means = _np(sums)[frames] / cnt.astype(np.float32)  # float32, as torch divided them
    newest_first = np.arange(len(frames) - 1, -1, -1)
    order = newest_first[_order_desc(means[newest_first])]
    room = budget - n_prot
    if strata:
        order = _strata_first(order, frames, room // int(cnt.max()))  # cnt >= 1: frames holding tokens
    if bool((cnt == cnt[0]).all()):  # equal frames: the greedy is a prefix
        chosen = frames[order[: room // int(cnt[0])]]
    else:
        chosen, c, fl = [], cnt.tolist(), frames.tolist()
        for j in order.tolist():  # greedy: best frames that still fit
            if c[j] <= room:
                chosen.append(fl[j])
                room -= c[j]
        chosen = np.asarray(chosen, dtype=np.int64)
    pick = np.zeros(len(counts) + 1, dtype=bool)  # the extra slot: tokens of no free frame
    pick[chosen] = True
    keep = prot | (free & pick[np.clip(fr - lo, 0, len(counts))])
    return torch.from_numpy(np.flatnonzero(keep))


def strata_first(order: torch.Tensor, frames: torch.Tensor, k: int) -> torch.Tensor:
    """Reorder `order` (positions into `frames`, best first) so that the best frame of each of k equal
    spans of frame index [frames[0], frames[-1]] comes first (in `order`'s order), then the rest (ditto).
    Spans with no frame leave their slot to the best of the rest."""
    return torch.from_numpy(_strata_first(_np(order), _np(frames), k))


def _strata_first(order: np.ndarray, frames: np.ndarray, k: int) -> np.ndarray:
    n = len(frames)
    if k <= 0 or k >= n:
        return order
    lo, span = int(frames[0]), int(frames[-1]) - int(frames[0]) + 1
    stratum = ((frames[order] - lo) * k) // span  # (n,) stratum of each frame, in order
    first_rank = np.full(k, n)
    np.minimum.at(first_rank, stratum, np.arange(n))  # (k,) first rank in each stratum
    first = np.zeros(n, dtype=bool)
    first[first_rank[first_rank < n]] = True
    return np.concatenate([order[first], order[~first]])


SELECTIONS = ("token", "frame", "strata")


class Selector:
    """Which tokens a layer keeps, given the scorer's scores, the protected mask and a budget: single tokens
    (`token`), whole frames by mean score (`frame`), or whole frames spread over time (`strata`).

    Per-head keep sets (Dummy Forcing, Forcing-KV): scores of shape (H, n) select each head's own tokens at
    token granularity, (H, k) indices with the same k per head (the budget is per head). A cache that stores
    heads apart is what such a policy needs next; the selection itself is already here."""

    __slots__ = ("granularity",)

    def __init__(self, granularity: str = "token"):
        if granularity not in SELECTIONS:
            raise ValueError(f"granularity must be one of {', '.join(SELECTIONS)}, got {granularity!r}")
        self.granularity = granularity

    def __repr__(self) -> str:
        return f"Selector({self.granularity!r})"

    def keep(self, scores: torch.Tensor, protected: torch.Tensor, meta, budget: int) -> torch.Tensor:
        """Sorted cache indices to keep: (k,) for scores (n,), or (H, k) per head for scores (H, n)."""
        if scores.dim() == 2:
            if self.granularity != "token":
                raise ValueError(f"per-head scores select single tokens, not {self.granularity!r}")
            return torch.stack([select(s, protected, budget, meta["token_id"]) for s in scores])
        if self.granularity == "token":
            return select(scores, protected, budget, meta["token_id"])
        return select_frames(scores, protected, meta["frame"], budget, self.granularity == "strata")
