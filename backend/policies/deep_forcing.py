"""`deep_forcing`: deep sink + participative compression (Deep Forcing, arXiv 2512.05081; training-free).

Confirmed from the paper: a deep sink of S frames (about half the window; S=10 of N=16) with its temporal
RoPE shifted to sit next to the tail; participative compression when the window is full: candidates
between the sink and the R most recent frames are scored by raw dot products q.k summed over the recent
frames' queries (no softmax), the top C = budget - sink - recent are kept, and the kept tokens are
re-rotated to contiguous temporal positions, [sink | top-C | recent] in temporal order.
Our reconstruction: the recent queries are those of the last R commit passes (the cache keeps each
token's mean raw logit from the last 4 commits, head-averaged: `observe.Observer.qk_history`); `sink_frames=0`
means half the budget in
frames; the RoPE mode `reindex` gives the contiguous positions (the sink shift is part of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import KIND_PROMPT
from ..observe import QK_HISTORY
from .scorer import Scorer


@dataclass
class DeepForcing(Scorer):
    name = "deep_forcing"
    reads = "logits"  # raw q.k sums: no materialised attention
    sink_frames: int = 0  # 0 = half the budget (in frames)
    recent_frames: int = 4

    def __post_init__(self):
        if not 1 <= self.recent_frames <= QK_HISTORY:
            raise ValueError(f"recent_frames must be 1..{QK_HISTORY}, got {self.recent_frames}")

    def sink(self, n_prompt: int, tokens_per_frame: int, budget: int | None) -> int:
        """Frames of the deep sink: `sink_frames`, or half the budget's frames when it is 0."""
        if self.sink_frames or budget is None:
            return self.sink_frames
        return max(1, (budget - n_prompt) // tokens_per_frame // 2)

    def sink_frames_at(self, layer, ctx):
        return self.sink(int((layer.meta["kind"].numpy() == KIND_PROMPT).sum()), ctx.tokens_per_frame, ctx.budget)

    def protected(self, layer, ctx):
        m = layer.meta  # numpy on views: every layer, every commit
        kind, frame = m["kind"].numpy(), m["frame"].numpy()
        s = self.sink(int((kind == KIND_PROMPT).sum()), ctx.tokens_per_frame, ctx.budget)
        return torch.from_numpy(
            super().protected(layer, ctx).numpy()  # anchors, newest
            | ((frame >= 0) & (frame < s))  # deep sink
            | (frame > ctx.newest_frames[1] - self.recent_frames)
        )  # recent frames

    def score(self, layer_idx, layer, ctx):
        cols = [(ctx.chunk - r) % QK_HISTORY for r in range(self.recent_frames)]  # the last R commits
        return self.observed.qk_history(layer_idx)[:, cols].sum(1)
