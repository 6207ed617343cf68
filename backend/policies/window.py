"""`window`: Self-Forcing's rolling KV cache (arXiv 2506.08009; guandeh17/Self-Forcing
`CausalWanSelfAttention.forward`): keep the newest `frames` frames (frame granularity, FIFO) and the prompt
anchors (with a token `budget`, the newest whole frames that fit in it); keys keep their absolute RoPE positions.
Self-Forcing has cross-attention text conditioning, so
its window holds frames only; our prompt tokens live in the self-attention cache and are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cache import KIND_PROMPT
from .scorer import Scorer


@dataclass
class Window(Scorer):
    name = "window"
    frames: int = 16

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"window must hold at least 1 frame, got {self.frames}")

    def window_tokens(self, n_prompt, tokens_per_frame, chunk_frames):
        return n_prompt + (self.frames + chunk_frames) * tokens_per_frame

    def score(self, layer_idx, layer, ctx):
        return layer.meta["frame"].float()

    def keep(self, layer_idx, layer, ctx, budget, selector):
        if budget is not None:  # a token budget: the newest whole frames that fit
            return super().keep(layer_idx, layer, ctx, budget, selector)
        m = layer.meta
        newest = ctx.newest_frames[1]
        keep = (m["kind"] == KIND_PROMPT) | (m["frame"] > newest - self.frames)
        return keep.nonzero().flatten(), m["frame"].float()  # score = recency (frame index)
