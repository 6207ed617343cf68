"""Per-head keeps shared by the per-head policies (Dummy Forcing, Forcing-KV): the heads of a layer hold
different tokens (`cache.LayerCache.head_mask`), and their budget is counted in (token, head) pairs, so a head
that holds less frees room for the others at the same bytes."""

from __future__ import annotations

import numpy as np
import torch

from ..cache import LayerCache


def head_slots(budget: int, n_head: int) -> int:
    """(token, head) pairs a layer may hold at a per-layer `budget` of tokens: the bytes of `budget` tokens
    held by every head."""
    return budget * n_head


def rank_keep(order: np.ndarray, protected: np.ndarray, room: int) -> np.ndarray:
    """(n,) bool: the protected tokens and the first `room` unprotected tokens of `order` (cache positions,
    best first)."""
    keep = protected.copy()
    free = order[~protected[order]]
    keep[free[: max(room, 0)]] = True
    return keep


def newest_first(layer: LayerCache) -> np.ndarray:
    """Cache positions newest first (frame index, then token id; prompt anchors last)."""
    m = layer.meta
    return np.lexsort((-m["token_id"].numpy(), -m["frame"].numpy()))


def split_slots(slots: int, fixed: np.ndarray, free_heads: np.ndarray) -> np.ndarray:
    """(H,) tokens each head may hold: heads in `fixed` hold what they hold (`fixed` (H,) their counts, -1 for
    the free heads), the slots left are shared equally by `free_heads` (H,) bool."""
    out = fixed.copy()
    n_free = int(free_heads.sum())
    if n_free:
        out[free_heads] = (slots - int(fixed[~free_heads].sum())) // n_free
    return out


def held_tensor(rows: list[np.ndarray]) -> torch.Tensor:
    """Per-head keep rows (n,) bool -> (H, n) bool tensor."""
    return torch.from_numpy(np.stack(rows))


def newest_rows(layer: LayerCache, protected: np.ndarray, tokens: int, tokens_per_frame: int) -> np.ndarray:
    """(n,) bool: the protected tokens and the newest whole frames that fit in `tokens` per head."""
    room = ((tokens - int(protected.sum())) // tokens_per_frame) * tokens_per_frame
    return rank_keep(newest_first(layer), protected, room)
