"""`tempcache`: merge temporally corresponding near-duplicate keys (TempCache, arXiv 2602.01801).

Confirmed from the paper: keys of the same semantic point recur across frames; keep the most recent
representative; Lemma 5.1: if the keys of a group are identical, attention over all of them equals
attention over the representative with logit bias +log|group| and the group's mean value (exact).
Our reconstruction: at each commit, every older frame token whose rotated key (what attention sees) has
cosine similarity >= `threshold` with a token of the newest chunk is merged into the most similar one
(count-weighted mean value, counts add, +log(count) applied at attention time by the model); if the
cache is still over budget the oldest frames go (FIFO). The paper finds groups with ANN/LSH; we search
exactly (one matrix product of unit keys per layer, about 0.35 ms per layer at 1/8 of a 256-frame cache on
one CPU thread, a quarter of TempCache's eviction step, whose 8% overhead is the largest of the library:
docs/backend.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import KIND_FRAME
from .base import Policy, select
from .signals import recency


@dataclass
class TempCache(Policy):
    name = "tempcache"
    granularities = ("token",)            # merging works on single tokens
    threshold: float = 0.95

    def score(self, layer_idx, layer, ctx):
        return recency(layer)

    def merge_step(self, layer, ctx) -> torch.Tensor:
        """Merge older near-duplicates into the newest chunk's tokens (values and counts, in place); returns
        the (n,) mask of the tokens merged away, which the eviction then drops with the rest."""
        m = layer.meta
        newest = m["frame"] >= ctx.newest_frames[0]
        old = (m["kind"] == KIND_FRAME) & ~newest
        new = newest.nonzero().flatten()
        if len(new) == 0 or not bool(old.any()):
            return torch.zeros(len(layer), dtype=torch.bool)
        k = layer.rotated_keys(ctx.rotate) if ctx.rotate is not None else layer.k   # (H, n, Dh) as attention sees them
        H, n, Dh = k.shape
        kf = k.transpose(0, 1).reshape(n, H * Dh)                                    # (n, H*Dh) concatenated heads
        kf = kf / kf.norm(dim=1, keepdim=True).clamp_min(1e-12)                      # unit keys
        best, arg = (kf @ kf.index_select(0, new).T).max(1)                          # (n,) best cosine with a new token
        hit = ((best >= self.threshold) & old).nonzero().flatten()
        return layer.merge_values(hit, new[arg[hit]])

    def prepare(self, cache, ctx):
        self._gone = [self.merge_step(layer, ctx) for layer in cache.layers]
        return [torch.zeros(0, dtype=torch.long) for _ in cache.layers]    # the keep reports the merged ids

    def keep_indices(self, layer_idx, layer, ctx, budget):
        """The survivors of the merge, then the newest of them up to the budget (one copy of the cache)."""
        gone = self._gone[layer_idx] if getattr(self, "_gone", None) else torch.zeros(len(layer), dtype=torch.bool)
        alive = (~gone).nonzero().flatten()
        if budget is None or len(alive) <= budget:
            return alive, None
        scores = self.score(layer_idx, layer, ctx)
        return (select(scores.masked_fill(gone, float("-inf")), self.protected(layer, ctx) & ~gone, budget,
                       layer.meta["token_id"]), scores)

    def describe(self):
        return {**super().describe(), "threshold": self.threshold}
