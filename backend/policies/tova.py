"""`tova`: Token Omission Via Attention (Oren et al., 2024; kvpress `TOVAPress`).

Score = the attention the newest queries give each cached token, averaged over heads; the lowest are
dropped whenever the cache is over budget. For video the "newest queries" are the newest chunk's tokens
at its clean commit pass (our reconstruction: TOVA uses the last generated token).
The attention is that of a commit's probe queries, 1/8 of them (`probe`, ZipCache-style; `probe=1` for all:
docs/decisions/probe_validation/).
Evicts once every two chunks (`period=2`, chosen on validation prompts: docs/decisions/period_validation/;
`period=1` evicts after every chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import Scorer
from .signals import recent_attention


@dataclass
class TOVA(Scorer):
    name = "tova"
    reads = "probs"
    reads_newest = True  # only the newest commit's attention (`recent`)

    def score(self, layer_idx, layer, ctx):
        return recent_attention(self.observed, layer_idx)
