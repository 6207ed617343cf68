"""`random`: keep a uniformly random subset of the evictable tokens (lower bound). Deterministic for
(seed, chunk, layer), so a run is reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scorer import Scorer


@dataclass
class Random(Scorer):
    name = "random"
    seed: int = 0

    def score(self, layer_idx, layer, ctx):
        """One uniform draw per token id (not per cache slot), so the draw does not depend on cache order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.chunk * 101 + layer_idx)
        ids = layer.meta["token_id"]
        return torch.rand(int(ids.max()) + 1 if len(ids) else 0, generator=g)[ids]
