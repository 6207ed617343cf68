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

from dataclasses import dataclass

import torch

from ..cache import KIND_FRAME
from .base import Policy, select_frames
from .layer_split import water_fill
from .signals import recent_attention


def fit_rho(dist: torch.Tensor, att: torch.Tensor, lo: float, hi: float) -> float:
    """Least-squares slope of log(mean attention) over distance -> rho = exp(slope), clamped."""
    d = dist.unique()
    if len(d) < 2:
        return hi
    mean = torch.stack([att[dist == x].mean() for x in d]).clamp_min(1e-12).log()
    x = d.float() - d.float().mean()
    slope = float((x * (mean - mean.mean())).sum() / (x * x).sum())
    return float(min(max(torch.tensor(slope).exp().item(), lo), hi))


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
        frames = m["frame"][cand].unique()
        dist = ctx.newest_frames[1] - m["frame"]
        rho = fit_rho(dist[cand], att[cand], self.rho_min, self.rho_max)
        self.last_rho = {**(self.last_rho or {}), layer_idx: rho}
        if self.granularity == "frame":          # whole frames, ranked by decayed mean attention
            score = att * rho ** dist.clamp_min(0).float()
            return select_frames(score, prot, m["frame"], budget), score
        caps = torch.stack([(m["frame"][cand] == f).sum() for f in frames])
        weights = torch.tensor([rho ** float(ctx.newest_frames[1] - f) for f in frames])
        alloc = water_fill(weights, caps, budget - int(prot.sum()))
        keep = prot.clone()
        score = torch.full((n,), float("-inf"))
        for f, b in zip(frames.tolist(), alloc.tolist()):
            idx = (cand & (m["frame"] == f)).nonzero().flatten()
            if self.within == "grid":
                pick = idx[torch.linspace(0, len(idx) - 1, b).round().long()] if b else idx[:0]
            else:
                pick = idx[att[idx].topk(b).indices] if b else idx[:0]
            keep[pick] = True
            score[idx] = att[idx] * rho ** float(ctx.newest_frames[1] - f)
        return keep.nonzero().flatten(), score

    def describe(self):
        return {**super().describe(), "within": self.within, "rho": self.last_rho}
