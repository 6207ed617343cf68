"""Salience signals read from cache metadata (DESIGN §6), shared by the scoring policies."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cache import KIND_FRAME, LayerCache


def past_attention(layer: LayerCache) -> torch.Tensor:
    """Accumulated attention normalised by the number of queries that could see each token
    (H2O as implemented in kvpress `ObservedAttentionPress`; ZipCache's normalisation): (n,)."""
    m = layer.meta
    return m["attn_sum"] / m["attn_count"].clamp_min(1.0)


def recent_attention(layer: LayerCache) -> torch.Tensor:
    """Mean attention each token received from the newest committed chunk's queries (head mean): (n,)."""
    return layer.meta["recent"].clone()


def recency(layer: LayerCache) -> torch.Tensor:
    """Frame index as a score (newer = higher); prompt tokens get -1: (n,)."""
    return layer.meta["frame"].float()


def spatial_pool(values: torch.Tensor, layer: LayerCache, grid: int, kernel: int) -> torch.Tensor:
    """Average-pool a per-token signal over a kernel x kernel neighbourhood within each frame
    (SnapKV's pooling, done on the frame grid instead of the 1D sequence). Prompt tokens keep their value."""
    m = layer.meta
    is_frame = m["kind"] == KIND_FRAME
    if kernel <= 1 or not bool(is_frame.any()):
        return values.clone()
    frames = m["frame"][is_frame]
    uniq, inv = frames.unique(return_inverse=True)
    img = torch.zeros(len(uniq), grid, grid)
    img[inv, m["y"][is_frame], m["x"][is_frame]] = values[is_frame].float()
    pooled = F.avg_pool2d(img[:, None], kernel, stride=1, padding=kernel // 2, count_include_pad=False)[:, 0]
    out = values.clone().float()
    out[is_frame] = pooled[inv, m["y"][is_frame], m["x"][is_frame]]
    return out
