"""Write-time admission: when a chunk is committed, decide for each of its tokens whether it enters the cache at
all (the request of NVIDIA/kvpress#257: decisions for new tokens only, existing entries never rewritten, so that
the rule suits append-only caches).

Confirmed from the issue and its proposal (kvpress PR #258, closed, not merged): a filtering press wraps any
scorer; a new token is kept only if its score would rank within the kept share of the tokens seen (per head, or
by a majority vote over heads).
Our reconstruction for video: a token's score at write time is its novelty, 1 - the largest cosine similarity of
its key (before RoPE, all heads together) with the cached keys of the same grid cell in earlier frames: a token
its cell already holds a near copy of adds little. The `admit` share of each chunk's tokens with the lowest
novelty are refused (all heads together; tokens of a cell the cache does not hold yet always enter); the policy's
own keep then runs on the cache that is left. `admit=0` (the default of every other policy) adds nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache import KIND_FRAME, LayerCache
from .signals import grid_cells


def novelty(layer: LayerCache, new: np.ndarray) -> np.ndarray:
    """(len(new),) 1 - the best cosine similarity of each new token's key with the older frame tokens of its
    grid cell (un-rotated keys over the concatenated heads); NaN where the cache holds no older token there."""
    m = layer.meta
    kind, fr, cell = m["kind"].numpy(), m["frame"].numpy(), grid_cells(layer)
    first = fr[new].min()
    old = np.flatnonzero((kind == KIND_FRAME) & (fr < first))
    out = np.full(len(new), np.nan)
    if len(old) == 0:
        return out
    inv = layer.inverse_key_norms()
    H, _, Dh = layer.k.shape

    def unit(idx: np.ndarray) -> torch.Tensor:  # (m, H * Dh) unit keys
        at = torch.from_numpy(idx)
        return layer.k[:, at].transpose(0, 1).reshape(len(idx), H * Dh) * inv[at][:, None]

    sim = (unit(new) @ unit(old).T).numpy()  # (new, old)
    same = cell[new][:, None] == cell[old][None, :]
    sim = np.where(same, sim, -np.inf)
    best = sim.max(1)
    has = np.isfinite(best)
    out[has] = 1.0 - best[has]
    return out


def refused(layer: LayerCache, newest_first: int, share: float) -> np.ndarray:
    """Cache positions of the chunk's tokens (frames >= newest_first) refused at write time: the `share` of them
    with the lowest novelty, among those whose cell the cache already holds."""
    fr, kind = layer.meta["frame"].numpy(), layer.meta["kind"].numpy()
    new = np.flatnonzero((kind == KIND_FRAME) & (fr >= newest_first))
    k = int(share * len(new))
    if k == 0 or len(new) == 0:
        return new[:0]
    nov = novelty(layer, new)
    cand = np.flatnonzero(~np.isnan(nov))
    order = cand[np.argsort(nov[cand], kind="stable")]
    return new[order[:k]]
