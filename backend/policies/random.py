"""`random`: keep a uniformly random subset of the evictable tokens (lower bound). Deterministic for
(seed, chunk, layer), so a run is reproducible."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Policy


@dataclass
class Random(Policy):
    name = "random"
    seed: int = 0

    def score(self, layer_idx, layer, ctx):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.chunk * 101 + layer_idx)
        return torch.rand(len(layer), generator=g)
