"""`snapkv`: observation-window voting with pooling (Li et al., SnapKV, 2024; kvpress `SnapKVPress`).

Score = attention from the observation window (here: the newest chunk's queries at commit), smoothed by
average pooling. SnapKV pools with a 1D kernel of 5 over the sequence; we pool over a `kernel` x `kernel`
spatial neighbourhood within each frame, which is what a 1D pool over a raster-ordered frame approximates
(our reconstruction for 2D token grids).
The attention is that of a commit's probe queries, 1/8 of them (`probe`, ZipCache-style; `probe=1` for all:
docs/decisions/probe_validation/).
Evicts once every two chunks (`period=2`, chosen on validation prompts: docs/decisions/period_validation/;
`period=1` evicts after every chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import Scorer
from .signals import check_kernel, recent_attention, spatial_pool


@dataclass
class SnapKV(Scorer):
    name = "snapkv"
    reads = "probs"
    reads_newest = True  # only the newest commit's attention (`recent`)
    kernel: int = 3

    def __post_init__(self):
        check_kernel(self.kernel)

    def score(self, layer_idx, layer, ctx):
        return spatial_pool(recent_attention(self.observed, layer_idx), layer, ctx.grid, self.kernel)
