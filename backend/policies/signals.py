"""Salience signals (DESIGN §6) shared by the scoring policies: the observed attention (`observe.Observer`,
the policy's own accumulators) and what the cache itself holds (frame index, grid cells)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import KIND_FRAME, LayerCache


def past_attention(observed, layer_idx: int) -> torch.Tensor:
    """Accumulated attention normalised by the number of queries that could see each token
    (H2O as implemented in kvpress `ObservedAttentionPress`; ZipCache's normalisation): (n,)."""
    return _observed(observed).past_attention(layer_idx)


def recent_attention(observed, layer_idx: int) -> torch.Tensor:
    """Mean attention each token received from the newest committed chunk's queries (head mean): (n,)."""
    return _observed(observed).recent(layer_idx)


def _observed(observed):
    if observed is None:
        raise ValueError(
            "this policy reads observed attention but runs without an observer: drive it through "
            "the Stepper (which binds one), or bind an observe.Observer to it"
        )
    return observed


def grid_cells(layer: LayerCache) -> np.ndarray:
    """(n,) one number per grid cell (y, x) of each token: tokens of different frames at the same place share it
    (cell-wise merges and comparisons across frames; any grid shape)."""
    m = layer.meta
    return m["y"].numpy() * (int(m["x"].numpy().max(initial=0)) + 1) + m["x"].numpy()


def held_frames(layer: LayerCache) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The frames a layer holds, through a table indexed by frame (no unique / searchsorted; this runs on every
    layer at every eviction): (indices of its frame tokens, their frames, the lowest frame `lo`, `one` with
    one[f - lo] a token of frame f, -1 where frame f is not held)."""
    idx = np.flatnonzero(layer.meta["kind"].numpy() == KIND_FRAME)
    fr = layer.meta["frame"].numpy()[idx]
    if len(idx) == 0:
        return idx, fr, 0, np.full(0, -1)
    lo = int(fr.min())
    one = np.full(int(fr.max()) - lo + 1, -1)
    one[fr - lo] = idx
    return idx, fr, lo, one


def recency(layer: LayerCache) -> torch.Tensor:
    """Frame index as a score (newer = higher); prompt tokens get -1: (n,)."""
    return layer.meta["frame"].float()


def spatial_pool(values: torch.Tensor, layer: LayerCache, grid: int, kernel: int) -> torch.Tensor:
    """Average-pool a per-token signal over a kernel x kernel neighbourhood within each frame
    (SnapKV's pooling, done on the frame grid instead of the 1D sequence). Prompt tokens keep their value;
    an evicted token's cell counts as 0."""
    return frame_pool(values, layer, grid, kernel, avg_pool, 0.0)


def check_kernel(kernel) -> None:
    """Pooling kernels are odd sizes >= 1, centred on the token."""
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd whole number >= 1 (cells a side), got {kernel!r}")


def avg_pool(img: np.ndarray, kernel: int) -> np.ndarray:
    """Mean over kernel x kernel cells of each (F, g, g) image, padding not counted (torch's avg_pool2d,
    count_include_pad=False, stride 1)."""
    pooled = F.avg_pool2d(
        torch.from_numpy(img)[:, None], kernel, stride=1, padding=kernel // 2, count_include_pad=False
    )
    return pooled[:, 0].numpy()


def max_pool(img: np.ndarray, kernel: int) -> np.ndarray:
    """Max over kernel x kernel cells of each (F, g, g) image (stride 1, -inf padding), separably: a max
    over kernel shifted rows, then over kernel shifted columns (2 kernel numpy ops, not kernel^2; equal to
    torch's max_pool2d, which costs a few times more on these small images)."""
    r, (n, h, w) = kernel // 2, img.shape
    pad = np.full((n, h + 2 * r, w + 2 * r), -np.inf, dtype=img.dtype)
    pad[:, r : r + h, r : r + w] = img
    rows = pad[:, :h].copy()  # (F, h, w + 2r)
    for dy in range(1, kernel):
        np.maximum(rows, pad[:, dy : dy + h], out=rows)
    out = rows[:, :, :w].copy()
    for dx in range(1, kernel):
        np.maximum(out, rows[:, :, dx : dx + w], out=out)
    return out


def frame_pool(values: torch.Tensor, layer: LayerCache, grid: int, kernel: int, pool, empty: float) -> torch.Tensor:
    """`pool` (`max_pool` or `avg_pool`: (F, g, g) images, kernel -> same shape) a per-token signal over
    kernel x kernel cells of each frame's grid, cells with no cached token set to `empty`; prompt tokens
    keep their value: (n,). Frame indices address the image stack directly (frames no longer cached are
    empty images): fewer small ops than grouping by frame."""
    m = layer.meta
    out = values.clone().float()
    is_frame = np.flatnonzero(m["kind"].numpy() == KIND_FRAME)  # index bookkeeping in numpy (views)
    if kernel <= 1 or len(is_frame) == 0:
        return out
    f = m["frame"].numpy()[is_frame]
    lo = int(f.min())
    n_frames = int(f.max()) - lo + 1
    cell = ((f - lo) * grid + m["y"].numpy()[is_frame]) * grid + m["x"].numpy()[is_frame]
    o = out.numpy()
    img = np.full(n_frames * grid * grid, empty, dtype=np.float32)
    img[cell] = o[is_frame]
    o[is_frame] = pool(img.reshape(n_frames, grid, grid), kernel).reshape(-1)[cell]
    return out
