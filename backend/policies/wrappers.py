"""Wrappers around a scorer + selector (kvpress's `PerLayerCompressionPress` / `KeyRerotationPress` shape): each
changes one thing about how a policy's keep runs, for any scorer. `base.Policy` runs them in order: the layer
split sets per-layer budgets, the period lowers them to batch keeps, the RoPE re-alignment rewrites the kept
keys' positions. A setting at its neutral value (uniform, 1, absolute) adds no wrapper.
"""

from __future__ import annotations

import numpy as np
import torch

from .admission import refused
from .layer_split import LAYER_SPLITS, cake_budgets, prefixkv_budgets
from .rope_modes import ROPE_MODES, reindex, shift_sink


class Wrapper:
    """Hooks a wrapper may override; the defaults change nothing."""

    reads = "none"  # observed attention the wrapper itself reads
    uniform = True  # every layer keeps the same budget (so `Policy.evicts_after` can tell exactly)

    def budgets(self, policy, cache, ctx, budgets: list[int | None]) -> list[int | None]:
        """Per-layer token budgets of this keep."""
        return budgets

    def before_keep(self, policy, cache, ctx) -> list[np.ndarray] | None:
        """Work on the cache before the keep; returns the token ids it removed per layer (None: none)."""
        return None

    def after_keep(self, policy, layer, ctx) -> None:
        """Work on a layer after its keep (positions, ...)."""


class Admit(Wrapper):
    """Write-time admission (`admission.py`): the `share` of each committed chunk's tokens that add least to
    what the cache holds are refused before the policy's keep."""

    uniform = False  # the refused tokens make layers differ

    def __init__(self, share: float):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise ValueError(f"admit must be a share of each chunk's tokens in [0, 1), got {share!r}")
        self.share = float(share)

    def before_keep(self, policy, cache, ctx):
        out = []
        for i, layer in enumerate(cache.layers):
            gone = refused(layer, ctx.newest_frames[0], self.share)
            if len(gone):
                keep = np.ones(len(layer), bool)
                keep[gone] = False
                ids, source = layer.keep_map(torch.from_numpy(np.flatnonzero(keep)))
                if policy.scorer.observed is not None:
                    policy.scorer.observed.compact(i, source)
                out.append(ids.numpy())
            else:
                out.append(np.zeros(0, np.int64))
        return out


class LayerSplit(Wrapper):
    """Split the total budget over layers by the shape of their attention (`layer_split.py`: CAKE, PrefixKV);
    every layer keeps at least its protected tokens."""

    uniform = False

    def __init__(self, mode: str):
        if mode not in LAYER_SPLITS:
            raise ValueError(f"layer_split must be one of {', '.join(LAYER_SPLITS)}, got {mode!r}")
        self.mode = mode
        self.reads = "probs" if mode == "cake" else "none"

    def budgets(self, policy, cache, ctx, budgets):
        if policy.budget is None:
            return budgets
        scorer = policy.scorer
        prot = [int(scorer.protected(layer, ctx).sum()) for layer in cache.layers]
        sizes = [len(layer) for layer in cache.layers]
        if self.mode == "cake":
            return cake_budgets(cache, policy.budget, prot, sizes, scorer.observed)
        scores = [scorer.score(i, layer, ctx) for i, layer in enumerate(cache.layers)]
        free = [~scorer.protected(layer, ctx) for layer in cache.layers]
        return prefixkv_budgets([s[f] for s, f in zip(scores, free)], policy.budget, prot, sizes)


class Period(Wrapper):
    """Evict once the cache is over budget, down to `period` - 1 chunks below it, so that the next `period` - 1
    commits fit without an eviction and the keep (and, for scorers that read only the newest commit's
    attention, the commit's statistics) runs once every `period` chunks. Occupancy never exceeds the budget
    after an eviction step, and a layer never keeps fewer than its protected tokens. Deep Forcing compresses
    only when its window reaches its maximum (arXiv 2512.05081) and R-KV / FlowCache when a buffer of new
    tokens fills; a period counted in chunks is our reconstruction of that batching."""

    def __init__(self, period: int):
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"period must be a whole number of chunks >= 1, got {period!r}")
        self.period = period

    def budgets(self, policy, cache, ctx, budgets):
        chunk = ctx.chunk_frames * ctx.tokens_per_frame
        out = []
        for layer, b in zip(cache.layers, budgets):
            if b is not None and len(layer) > b:  # never below what the layer must keep (a split's budget
                b = max(b - (self.period - 1) * chunk, int(policy.scorer.protected(layer, ctx).sum()))  # may
            out.append(b)  # be tight)
        return out


class Realign(Wrapper):
    """Rewrite the kept keys' temporal positions (`rope_modes.py`): the sink shifted next to the tail
    (`shift_sink`, the scorer's `sink_frames_at`) or contiguous positions (`reindex`)."""

    def __init__(self, mode: str):
        if mode not in ROPE_MODES:
            raise ValueError(f"rope must be one of {', '.join(ROPE_MODES)}, got {mode!r}")
        self.mode = mode

    def after_keep(self, policy, layer, ctx):
        if self.mode == "reindex":
            reindex(layer)
        elif self.mode == "shift_sink":
            shift_sink(layer, policy.scorer.sink_frames_at(layer, ctx))


def wrappers_for(layer_split: str, period: int, rope: str, admit: float = 0.0) -> tuple[Wrapper, ...]:
    """The wrappers of these settings, in the order they run; neutral settings add none (each is also
    checked here, so a bad value is a message even where it would add nothing)."""
    out = (Admit(admit), LayerSplit(layer_split), Period(period), Realign(rope))
    neutral = (admit == 0, layer_split == "uniform", period == 1, rope == "absolute")
    return tuple(w for w, n in zip(out, neutral) if not n)
