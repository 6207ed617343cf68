"""`tempcache`: merge temporally corresponding near-duplicate keys (TempCache, arXiv 2602.01801).

Confirmed from the paper: keys of the same semantic point recur across frames; keep the most recent
representative; Lemma 5.1: if the keys of a group are identical, attention over all of them equals
attention over the representative with logit bias +log|group| and the group's mean value (exact).
Our reconstruction: at each commit, every older frame token whose rotated key (what attention sees) has
cosine similarity >= `threshold` with a token of the newest chunk is merged into the most similar one
(count-weighted mean value, counts add, +log(count) applied at attention time by the model); if the
cache is still over budget the oldest frames go (FIFO). By default the merge runs only when the keep does
(`merge_at="evict"`: with `period=2`, every second chunk once the budget is full), into the chunks committed
since the last keep; chosen on validation prompts (docs/decisions/tempcache_merge_validation/), where it
merged about 4x fewer tokens per chunk and none before the budget filled. `merge_at="commit"` merges into
the newest chunk at every cache write, the per-write reading of the paper. The paper finds groups with ANN/LSH; we
search
exactly: one batched matrix product per layer of the keys against the newest chunk's unit keys, summed
over heads, the rows scaled to cosines after the argmax (a row's scale does not change its argmax), so no
normalised or transposed copy of the cache is made.
Evicts once every two chunks (`period=2`, chosen on validation prompts: docs/decisions/period_validation/;
`period=1` evicts after every chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME, inverse_norms
from .scorer import Scorer
from .select import select
from .signals import recency


def nearest(k: torch.Tensor, targets: np.ndarray, inv: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each token's best cosine similarity with the tokens at positions `targets`, and which one, over the
    concatenated heads: k (H, n, Dh), targets (m,), inv (n,) the keys' inverse norms (computed when None)
    -> best (n,) float32, arg (n,) indices into targets.
    The product is torch's (it honours torch's thread count; numpy's BLAS starts its own threads, which
    oversubscribe the cores when the benchmark runs one 1-thread worker per core), the rest numpy's."""
    n = k.shape[1]
    tg = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    inv = (inverse_norms(k) if inv is None else inv).numpy()  # (n,) 1 / |k_i|
    unit = k.index_select(1, tg) * torch.from_numpy(inv[targets])[None, :, None]  # (H, m, Dh) unit targets
    sim = torch.addbmm(
        k.new_empty(n, len(tg)), k, unit.transpose(1, 2), beta=0
    ).numpy()  # (n, m) |k_i| cos(i, j), heads summed
    arg = sim.argmax(1)
    return sim[np.arange(n), arg] * inv, arg


@dataclass
class TempCache(Scorer):
    name = "tempcache"
    granularities = ("token",)  # merging works on single tokens
    threshold: float = 0.95
    merge_at: str = "evict"  # evict: merge only when the keep runs (over budget), into the chunks

    # committed since the last one; commit: into the newest chunk at every
    # commit (docs/decisions/tempcache_merge_validation/)
    def __post_init__(self):
        if self.merge_at not in ("commit", "evict"):
            raise ValueError(f"merge_at must be 'commit' or 'evict', got {self.merge_at!r}")

    def score(self, layer_idx, layer, ctx):
        return recency(layer)

    def merge_step(self, layer, ctx) -> None:
        """Merge older near-duplicates into the newest tokens (values and counts, in place): the newest chunk's,
        or with `merge_at="evict"` the `period` newest chunks' (those since the last keep). The tokens merged
        away are left with count 0, and the keep drops them with the rest."""
        m = layer.meta
        kind, frame = m["kind"].numpy(), m["frame"].numpy()  # views: bookkeeping in numpy
        first = ctx.newest_frames[0]
        if self.merge_at == "evict":
            first -= (ctx.period - 1) * ctx.chunk_frames
        newest = frame >= first
        old = (kind == KIND_FRAME) & ~newest
        new = np.flatnonzero(newest)
        if len(new) == 0 or not old.any():
            return
        k = layer.rotated_keys(ctx.rotate) if ctx.rotate is not None else layer.k  # (H, n, Dh) as attention sees them
        best, arg = nearest(k, new, layer.inverse_key_norms())  # RoPE keeps norms: the layer's memo
        hit = np.flatnonzero((best >= self.threshold) & old)
        layer.merge_values(torch.from_numpy(hit), torch.from_numpy(new[arg[hit]]))

    def prepare(self, cache, ctx):
        """Merge before the keep (not when `merge_at="evict"` and the keep will not run); merged-away tokens
        are marked in the cache itself (count 0), so the keep reads them from there."""
        if self.merge_at == "commit" or ctx.budget is None or ctx.over_budget:
            for layer in cache.layers:
                self.merge_step(layer, ctx)
        return [torch.zeros(0, dtype=torch.long) for _ in cache.layers]  # the keep reports the merged ids

    def keep(self, layer_idx, layer, ctx, budget, selector):
        """The survivors of the merge, then the newest of them up to the budget (one copy of the cache)."""
        gone = layer.meta["count"].numpy() == 0  # merged away (prepare)
        alive = np.flatnonzero(~gone)
        if budget is None or len(alive) <= budget:
            return torch.from_numpy(alive), None
        scores = self.score(layer_idx, layer, ctx)
        live = scores.numpy().copy()
        live[gone] = -np.inf
        prot = self.protected(layer, ctx).numpy() & ~gone
        return select(torch.from_numpy(live), torch.from_numpy(prot), budget, layer.meta["token_id"]), scores
