"""Splitting a total budget over layers by the shape of their attention.

- ``cake``: CAKE (Qin et al., ICLR 2025; `antgroup/cakekv: cake/model/modify_llama.py`): layer preference
  P_l = H_l^(1/tau1) * V_l^(1/tau2), H = entropy of the window attention (spatial dispersion), V = its
  variance over the window queries (temporal shift); B_l proportional to P_l. Our reconstruction from the
  statistics the cache keeps: H_l = entropy of the newest chunk's attention over the layer's tokens,
  V_l = variance over tokens of (newest-chunk attention - normalised past attention).
- ``prefixkv``: PrefixKV (`THU-MIG/PrefixKV: prefixkv.py::obtain_cdf_num`): per layer, sort normalised
  importance and accumulate; one global mass threshold p (binary search) decides how long a prefix each
  layer keeps so that the total matches the budget.
Every layer keeps at least its protected tokens; the total is L x the per-layer budget.
"""

from __future__ import annotations

import numpy as np
import torch

from .signals import past_attention, recent_attention

LAYER_SPLITS = ("uniform", "cake", "prefixkv")


def water_fill(weights, caps, total: int) -> np.ndarray:
    """Integer allocation proportional to weights, each at most its cap, summing to min(total, caps.sum()):
    weights (F,) >= 0 and caps (F,) integers (numpy arrays or CPU tensors) -> (F,) caps.dtype.
    In numpy, float64 (PackCache calls this on every layer after every commit). What flooring leaves goes
    one each to the heaviest entries with room (lower index first on equal weights); entries whose weights
    are all zero share equally."""
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(caps)
    alloc = np.zeros_like(cap)
    free = np.ones(len(cap), dtype=bool)
    left = min(total, int(cap.sum()))
    while left > 0 and free.any():
        wf = w * free
        mass = wf.sum()
        share = (wf / mass if mass > 0 else free / free.sum()) * left
        add = np.minimum(np.floor(share).astype(cap.dtype), cap - alloc)
        added = int(add.sum())
        if added == 0:  # the remainder: one each to the heaviest entries with room
            order = np.argsort(-np.where(free, w, -1.0), kind="stable")
            room = order[(free & (alloc < cap))[order]]
            alloc[room[:left]] += 1
            break
        alloc += add
        left -= added
        free &= alloc < cap
    return alloc


def cake_budgets(
    cache, budget: int, protected: list[int], sizes: list[int], observed, tau1: float = 1.6, tau2: float = 0.4
) -> list[int]:
    pref = []
    for i, layer in enumerate(cache.layers):
        a = recent_attention(observed, i).clamp_min(0)
        p = a / a.sum().clamp_min(1e-12)
        H = float(-(p * (p + 1e-12).log()).sum())
        V = float((a - past_attention(observed, i)).var()) if len(layer) > 1 else 0.0
        pref.append(max(H, 1e-6) ** (1 / tau1) * max(V, 1e-12) ** (1 / tau2))
    return _spread(torch.tensor(pref), budget, protected, sizes)


def prefixkv_budgets(free_scores: list[torch.Tensor], budget: int, protected: list[int], sizes: list[int]) -> list[int]:
    total = budget * len(sizes) - sum(protected)
    cdfs = []
    for s in free_scores:
        s = s.float() - s.float().min() if len(s) else s.float()
        p = s / s.sum().clamp_min(1e-12) if len(s) else s
        cdfs.append(p.sort(descending=True).values.cumsum(0))
    lo, hi = 0.0, 1.0
    for _ in range(40):  # the global mass threshold that spends the budget
        mid = (lo + hi) / 2
        used = sum(int((c < mid).sum()) + (1 if len(c) and bool((c >= mid).any()) else 0) for c in cdfs)
        lo, hi = (mid, hi) if used <= total else (lo, mid)
    keep = [min(int((c < lo).sum()) + 1, len(c)) if len(c) else 0 for c in cdfs]
    # hand out what rounding left, or take back the excess, to hit the total exactly where possible
    caps = torch.tensor([n - p for n, p in zip(sizes, protected)])
    alloc = torch.minimum(torch.tensor(keep), caps)
    left = total - int(alloc.sum())
    if left != 0:
        alloc = water_fill(alloc.float() + 1e-3, caps, min(total, int(caps.sum())))
    return [p + int(a) for p, a in zip(protected, alloc)]


def _spread(weights: torch.Tensor, budget: int, protected: list[int], sizes: list[int]) -> list[int]:
    caps = torch.tensor([n - p for n, p in zip(sizes, protected)])
    extra = budget * len(sizes) - sum(protected)
    alloc = water_fill(weights.float().clamp_min(1e-12), caps, max(extra, 0))
    return [p + int(a) for p, a in zip(protected, alloc)]
