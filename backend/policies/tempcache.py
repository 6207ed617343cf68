"""`tempcache`: merge temporally corresponding near-duplicate keys (TempCache, arXiv 2602.01801).

Confirmed from the paper: keys of the same semantic point recur across frames; keep the most recent
representative; Lemma 5.1: if the keys of a group are identical, attention over all of them equals
attention over the representative with logit bias +log|group| and the group's mean value (exact).
Our reconstruction: at each commit, every older frame token whose rotated key (what attention sees) has
cosine similarity >= `threshold` with a token of the newest chunk is merged into the most similar one
(count-weighted mean value, counts add, +log(count) applied at attention time by the model); if the
cache is still over budget the oldest frames go (FIFO). The paper finds groups with ANN/LSH; at our sizes
an exact nearest-neighbour search is cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import KIND_FRAME
from .base import Policy
from .signals import recency


@dataclass
class TempCache(Policy):
    name = "tempcache"
    granularities = ("token",)            # merging works on single tokens
    threshold: float = 0.95

    def score(self, layer_idx, layer, ctx):
        return recency(layer)

    def merge_step(self, layer, ctx) -> torch.Tensor:
        """Merge older near-duplicates into the newest chunk's tokens; returns merged-away token ids."""
        m = layer.meta
        new = (m["frame"] >= ctx.newest_frames[0]).nonzero().flatten()
        old = ((m["kind"] == KIND_FRAME) & (m["frame"] < ctx.newest_frames[0])).nonzero().flatten()
        if len(new) == 0 or len(old) == 0:
            return torch.zeros(0, dtype=torch.long)
        k = layer.rotated_keys(ctx.rotate) if ctx.rotate is not None else layer.k   # as attention sees them

        def unit(idx):                                                   # (m, H*Dh) unit-norm keys
            return torch.nn.functional.normalize(k.index_select(1, idx).transpose(0, 1).reshape(len(idx), -1), dim=1)
        sim = unit(old) @ unit(new).T                                                            # (n_old, n_new)
        best, arg = sim.max(1)
        hit = best >= self.threshold
        return layer.merge(old[hit], new[arg[hit]])

    def prepare(self, cache, ctx):
        return [self.merge_step(layer, ctx) for layer in cache.layers]

    def describe(self):
        return {**super().describe(), "threshold": self.threshold}
