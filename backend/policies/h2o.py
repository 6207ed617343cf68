"""`h2o`: heavy hitters + recent window (Zhang et al., H2O, NeurIPS 2023).

Score = attention accumulated over every commit pass so far, normalised by how many queries could see
the token (kvpress `ObservedAttentionPress`); the newest `recent_frames` frames are protected (H2O's
recent window). Our reconstruction for video: scores are head-averaged and refreshed once per chunk at the
clean commit pass, not at every decoding step.
The attention is that of a commit's probe queries, 1/8 of them (`probe`, ZipCache-style; `probe=1` for all:
docs/decisions/probe_validation/).
Evicts once every two chunks (`period=2`, chosen on validation prompts: docs/decisions/period_validation/;
`period=1` evicts after every chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import Scorer
from .signals import past_attention


@dataclass
class H2O(Scorer):
    name = "h2o"
    reads = "probs"
    recent_frames: int = 2

    def protected(self, layer, ctx):
        return super().protected(layer, ctx) | (layer.meta["frame"] > ctx.newest_frames[1] - self.recent_frames)

    def score(self, layer_idx, layer, ctx):
        return past_attention(self.observed, layer_idx)
