"""`sink`: attention sinks + recent window.

StreamingLLM (Xiao et al., 2023) keeps the first tokens as sinks plus a recent window; LongLive
(arXiv 2509.22622, `NVlabs/LongLive`, `local_attn_size: 12`, `sink_size: 3`) pins the first chunk's
frames as a *frame sink* inside the window budget. Follows LongLive: the first `sink_frames` frames are
protected, the rest of the budget is filled by the newest frames (frame granularity, absolute RoPE).
"""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import Scorer
from .signals import recency


@dataclass
class Sink(Scorer):
    name = "sink"
    sink_frames: int = 3

    def __post_init__(self):
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be >= 0, got {self.sink_frames}")

    def protected(self, layer, ctx):
        return super().protected(layer, ctx) | ((layer.meta["frame"] >= 0) & (layer.meta["frame"] < self.sink_frames))

    def score(self, layer_idx, layer, ctx):
        return recency(layer)

    def sink_frames_at(self, layer, ctx):
        return self.sink_frames
