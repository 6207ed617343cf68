"""`tova`: Token Omission Via Attention (Oren et al., 2024; kvpress `TOVAPress`).

Score = the attention the newest queries give each cached token, averaged over heads; the lowest are
dropped whenever the cache is over budget. For video the "newest queries" are the newest chunk's tokens
at its clean commit pass (our reconstruction: TOVA uses the last generated token).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Policy
from .signals import recent_attention


@dataclass
class TOVA(Policy):
    name = "tova"
    reads = "probs"

    def score(self, layer_idx, layer, ctx):
        return recent_attention(layer)
