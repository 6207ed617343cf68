"""`packcache`: condition anchoring, cross-frame decay, spatially preserving positions
(PackCache, arXiv 2601.04359; training-free; no public code).

Confirmed from the paper: text/conditioning tokens are persistent anchors with a fixed quota, never
pruned; mean attention to a previous frame decays with distance d as C * rho^d; each frame's budget is
proportional to that decay; retained tokens keep coherent (t, h, w) positions.
Our reconstruction: the anchors are the 7 prompt tokens (their quota is their own size); rho is fitted
per layer at every eviction by least squares on log(mean attention from the newest chunk) against frame
distance (clamped to [`rho_min`, `rho_max`]); the free budget is water-filled over frames as
B_d proportional to rho^d (at most a whole frame each); inside a frame the `B_d` tokens with the highest
attention are kept (``within="attention"``) or a regular spatial subsample (``within="grid"``); positions
are never re-indexed (absolute RoPE).
The attention is that of a commit's probe queries, 1/8 of them (`probe`, ZipCache-style; `probe=1` for all:
docs/decisions/probe_validation/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME
from .layer_split import water_fill
from .scorer import Scorer
from .select import select_frames
from .signals import recent_attention


def fit_rho(dist: np.ndarray, mean_att: np.ndarray, lo: float, hi: float) -> float:
    """Least-squares slope of log(mean attention) over frame distance -> rho = exp(slope), clamped.
    dist (F,) the distances that hold candidates, mean_att (F,) their mean attention; in float64."""
    if len(dist) < 2:
        return hi
    y = np.log(np.maximum(np.asarray(mean_att, dtype=np.float64), 1e-12))
    x = np.asarray(dist, dtype=np.float64)
    x = x - x.mean()
    slope = float((x * (y - y.mean())).sum() / (x * x).sum())
    return min(max(math.exp(slope), lo), hi)


def rank_within(group: np.ndarray, slot: np.ndarray, value: np.ndarray, width: int) -> np.ndarray:
    """Rank of each element inside its group (0 = largest value; ties towards the higher `slot`, which in
    a frame is the later raster position, i.e. the newer token id): (n,). (group, slot) must be unique,
    0 <= slot < width, groups 0.. dense. One row-wise stable sort of a (groups, width) table."""
    group, slot = np.asarray(group), np.asarray(slot)
    n_groups = int(group.max()) + 1 if len(group) else 0
    table = np.full((n_groups, width), np.inf, dtype=np.float32)  # negated values: ascending = best first
    rev = width - 1 - slot  # higher slot first on ties
    table[group, rev] = -np.asarray(value, dtype=np.float32)
    order = np.argsort(table, axis=1, kind="stable")  # (G, W) column per rank
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(width), order.shape), axis=1)
    return rank[group, rev]


@dataclass
class PackCache(Scorer):
    name = "packcache"
    reads = "probs"
    reads_newest = True  # only the newest commit's attention (`recent`)
    within: str = "attention"  # attention | grid
    rho_min: float = 0.5
    rho_max: float = 0.99

    def keep(self, layer_idx, layer, ctx, budget, selector):
        """The fitted decay is the run's (`observed.notes["rho"]`, per layer). Index bookkeeping and the decay
        fit run in numpy on views of the metadata (this runs on every layer after every commit; a torch op's
        fixed cost was most of it)."""
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        m = layer.meta
        prot_t = self.protected(layer, ctx)
        prot, att, frame = prot_t.numpy(), recent_attention(self.observed, layer_idx).numpy(), m["frame"].numpy()
        cand = ~prot & (m["kind"].numpy() == KIND_FRAME)
        dist = ctx.newest_frames[1] - frame  # (n,) frames back
        idx = np.flatnonzero(cand)  # (c,) candidates
        if len(idx) == 0:
            return torch.from_numpy(np.flatnonzero(prot)), None
        f_lo = int(frame[idx].min())
        slot_f = frame[idx] - f_lo  # frame indices address per-frame sums directly
        counts = np.bincount(slot_f)
        frames = np.flatnonzero(counts)  # (F,) ascending, - f_lo
        caps = counts[frames]
        mean = np.bincount(slot_f, weights=att[idx])[frames] / caps  # (F,) mean attention
        d_frames = ctx.newest_frames[1] - f_lo - frames  # (F,) distance
        rho = fit_rho(d_frames, mean, self.rho_min, self.rho_max)
        if self.observed is not None:
            self.observed.notes.setdefault("rho", {})[layer_idx] = rho
        if selector.granularity == "frame":  # whole frames, ranked by decayed mean attention
            score = torch.from_numpy(att * (rho ** np.maximum(dist, 0)).astype(np.float32))
            return select_frames(score, prot_t, m["frame"], budget), score
        inv = (np.cumsum(counts > 0) - 1)[slot_f]  # (c,) frame slot 0..F-1
        weights = rho ** d_frames.astype(np.float64)  # (F,) cross-frame decay
        alloc = water_fill(weights, caps, budget - int(prot.sum()))  # (F,) tokens per frame
        if self.within == "grid":  # a regular spatial subsample of b tokens among the frame's c tokens
            idx = idx[
                np.argsort(m["token_id"].numpy()[idx], kind="stable")
            ]  # time then raster order (cache order is neither)
            start = np.cumsum(caps) - caps  # a frame's candidates are now contiguous
            j = np.arange(int(alloc.max()))  # (J,) the b positions of linspace(0, c-1, b)
            step = ((caps - 1).astype(np.float32) / np.maximum(alloc - 1, 1).astype(np.float32))[:, None]
            at = np.rint(j[None, :].astype(np.float32) * step).astype(np.int64)  # (F, J)
            pick = np.zeros(len(idx), dtype=bool)
            pick[(start[:, None] + at)[j[None, :] < alloc[:, None]]] = True
        else:  # the frame's top-b tokens by newest-chunk attention
            slot = m["y"].numpy()[idx] * ctx.grid + m["x"].numpy()[idx]  # raster cell: token-id order in a frame
            pick = rank_within(inv, slot, att[idx], ctx.grid * ctx.grid) < alloc[inv]
        keep = prot.copy()
        keep[idx[pick]] = True
        score = np.full(n, -np.inf, dtype=np.float32)
        score[idx] = att[idx] * (rho ** dist[idx].astype(np.float64)).astype(np.float32)
        return torch.from_numpy(np.flatnonzero(keep)), torch.from_numpy(score)
