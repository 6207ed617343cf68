"""Write-time admission: when a chunk is committed, decide for each of its tokens whether it enters the cache at
all (the request of NVIDIA/kvpress#257: decisions for new tokens only, existing entries never rewritten, so that
the rule suits append-only caches).

Confirmed from the issue and its proposal (kvpress PR #258, closed, not merged): a filtering press wraps any
scorer; a new token is kept only if its score would rank within the kept share of the tokens seen (per head, or
by a majority vote over heads).
Our reconstruction for video: a token's score at write time is its novelty, 1 - the cosine similarity of its key
(before RoPE, all heads together) with the newest cached key of the same grid cell: a token that repeats what
its cell already holds adds little. The `admit` share of each chunk's tokens with the lowest
novelty are refused (all heads together; tokens of a cell the cache does not hold yet always enter); the policy's
own keep then runs on the cache that is left. `admit=0` (the default of every other policy) adds nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache import KIND_FRAME, LayerCache
from .signals import grid_cells


def novelty(layer: LayerCache, new: np.ndarray) -> np.ndarray:
    """(len(new),) 1 - the cosine similarity of each new token's key with the newest cached token of its grid
    cell in an earlier frame (un-rotated keys over the concatenated heads); NaN where the cache holds none.
    One key per new token: the cell's latest state is what the new token would repeat."""
    m = layer.meta
    kind, fr, cell = m["kind"].numpy(), m["frame"].numpy(), grid_cells(layer)
    old = np.flatnonzero((kind == KIND_FRAME) & (fr < fr[new].min()))
    out = np.full(len(new), np.nan)
    if len(old) == 0:
        return out
    old = old[np.lexsort((fr[old], cell[old]))]  # by cell, then frame: each cell's newest last
    last = np.r_[cell[old][1:] != cell[old][:-1], True]
    newest = np.full(int(cell.max()) + 1, -1)  # cell -> its newest cached token (-1: none)
    newest[cell[old][last]] = old[last]  # one entry per cell
    pair = newest[cell[new]]
    has = pair >= 0
    if not has.any():
        return out
    H, _, Dh = layer.k.shape
    a = layer.k[:, torch.from_numpy(new[has])].transpose(0, 1).reshape(int(has.sum()), H * Dh)
    b = layer.k[:, torch.from_numpy(pair[has])].transpose(0, 1).reshape(int(has.sum()), H * Dh)
    out[has] = 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
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
