"""Salience signals read from cache metadata (DESIGN §6), shared by the scoring policies."""
from __future__ import annotations

import functools

import numpy as np
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
    (SnapKV's pooling, done on the frame grid instead of the 1D sequence). Prompt tokens keep their value;
    an evicted token's cell counts as 0."""
    pool = functools.partial(F.avg_pool2d, count_include_pad=False)
    return frame_pool(values, layer, grid, kernel, pool, 0.0)


def frame_pool(values: torch.Tensor, layer: LayerCache, grid: int, kernel: int, pool, empty: float) -> torch.Tensor:
    """`pool` (an F.*_pool2d) a per-token signal over kernel x kernel cells of each frame's grid, cells with
    no cached token set to `empty`; prompt tokens keep their value: (n,). Frame indices address the image
    stack directly (frames no longer cached are empty images): fewer small ops than grouping by frame."""
    m = layer.meta
    out = values.clone().float()
    is_frame = np.flatnonzero(m["kind"].numpy() == KIND_FRAME)        # index bookkeeping in numpy (views)
    if kernel <= 1 or len(is_frame) == 0:
        return out
    f = m["frame"].numpy()[is_frame]
    lo = int(f.min())
    n_frames = int(f.max()) - lo + 1
    cell = ((f - lo) * grid + m["y"].numpy()[is_frame]) * grid + m["x"].numpy()[is_frame]
    o = out.numpy()
    img = np.full(n_frames * grid * grid, empty, dtype=np.float32)
    img[cell] = o[is_frame]
    pooled = pool(torch.from_numpy(img).view(n_frames, 1, grid, grid), kernel, stride=1, padding=kernel // 2)
    o[is_frame] = pooled.reshape(-1).numpy()[cell]
    return out
