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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..cache import KIND_FRAME
from .base import Policy, select_frames
from .layer_split import water_fill
from .signals import recent_attention


def fit_rho(dist: torch.Tensor, att: torch.Tensor, lo: float, hi: float) -> float:
    """Least-squares slope of log(mean attention) over distance -> rho = exp(slope), clamped."""
    if len(dist) == 0:
        return hi
    d0 = int(dist.min())
    counts = torch.bincount(dist - d0)                                 # distances address the sums directly
    sums = torch.zeros(len(counts)).index_add_(0, dist - d0, att.float())
    d = counts.nonzero().flatten()
    if len(d) < 2:
        return hi
    mean = (sums[d] / counts[d]).clamp_min(1e-12).log()               # (distances,) log mean attention
    x = (d + d0).float()
    x = x - x.mean()
    slope = float((x * (mean - mean.mean())).sum() / (x * x).sum())
    return min(max(math.exp(slope), lo), hi)


def rank_within(group: torch.Tensor, slot: torch.Tensor, value: torch.Tensor, width: int) -> torch.Tensor:
    """Rank of each element inside its group (0 = largest value; ties towards the higher `slot`, which in
    a frame is the later raster position, i.e. the newer token id): (n,). (group, slot) must be unique,
    0 <= slot < width, groups 0.. dense. One row-wise sort of a (groups, width) table."""
    n_groups = int(group.max()) + 1 if len(group) else 0
    table = torch.full((n_groups, width), float("-inf"))
    rev = width - 1 - slot                                             # higher slot first on ties
    table[group, rev] = value.float()
    order = torch.sort(table, dim=1, descending=True, stable=True).indices     # (G, W) column per rank
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(width).expand(n_groups, width))
    return rank[group, rev]


@dataclass
class PackCache(Policy):
    name = "packcache"
    within: str = "attention"      # attention | grid
    rho_min: float = 0.5
    rho_max: float = 0.99
    last_rho: dict | None = None

    def keep_indices(self, layer_idx, layer, ctx, budget):
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        m = layer.meta
        prot = self.protected(layer, ctx)
        att = recent_attention(layer)
        cand = (~prot) & (m["kind"] == KIND_FRAME)
        dist = ctx.newest_frames[1] - m["frame"]
        rho = fit_rho(dist[cand], att[cand], self.rho_min, self.rho_max)
        self.last_rho = {**(self.last_rho or {}), layer_idx: rho}
        if self.granularity == "frame":          # whole frames, ranked by decayed mean attention
            score = att * rho ** dist.clamp_min(0).float()
            return select_frames(score, prot, m["frame"], budget), score
        frame_c = m["frame"][cand]
        frames, inv, caps = frame_c.unique(return_inverse=True, return_counts=True)   # (F,) ascending
        weights = (rho ** (ctx.newest_frames[1] - frames).double()).float()                 # (F,) cross-frame decay
        alloc = water_fill(weights, caps, budget - int(prot.sum()))                  # (F,) tokens per frame
        idx = cand.nonzero().flatten()                                               # (c,) candidates
        if self.within == "grid":       # a regular spatial subsample of b tokens among the frame's c tokens
            idx = idx[m["token_id"][idx].argsort()]                      # time then raster order (cache order is neither)
            pick = torch.zeros(len(idx), dtype=torch.bool)
            start = caps.cumsum(0) - caps                                # a frame's candidates are now contiguous
            j = torch.arange(int(alloc.max()))                           # (J,) the b positions of linspace(0, c-1, b)
            step = ((caps - 1).float() / (alloc - 1).clamp_min(1).float())[:, None]
            at = (j[None, :].float() * step).round().long()              # (F, J)
            ok = j[None, :] < alloc[:, None]
            pick[(start[:, None] + at)[ok]] = True
        else:                           # the frame's top-b tokens by newest-chunk attention
            slot = m["y"][idx] * ctx.grid + m["x"][idx]                   # raster cell: token-id order in a frame
            pick = rank_within(inv, slot, att[idx], ctx.grid * ctx.grid) < alloc[inv]
        keep = prot.clone()
        keep[idx[pick]] = True
        score = torch.full((n,), float("-inf"))
        score[idx] = att[idx] * (rho ** dist[idx].double()).float()
        return keep.nonzero().flatten(), score

    def describe(self):
        return {**super().describe(), "within": self.within, "rho": self.last_rho}
