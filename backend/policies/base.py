"""The policy API: a `Policy` composes a scorer (`scorer.Scorer`: what it reads, protects and scores), a selector
(`select.Selector`: token, frame or strata granularity), wrappers (`wrappers.py`: layer split, period, RoPE
re-alignment) and the cache's storage (`storage.Storage`), kvpress style (NVIDIA/kvpress `ScorerPress` and its
wrapper presses). After each commit it keeps a subset of tokens per layer: the protected tokens (prompt anchors,
the newest chunk) and the selector's pick of the rest by score, up to the budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME, KIND_PROMPT, KVCache, LayerCache, settle
from ..models.attention import STATS
from ..observe import Observer, Request
from ..storage import Storage
from .scorer import Scorer
from .select import Selector
from .signals import past_attention
from .wrappers import wrappers_for

# What an evicting run computes can change with the engine code even when no setting does: the benchmark's
# resume keys include this, so bump it with such a change (tests/fixtures/behaviour.json proves a refactor
# left every frame unchanged).
ENGINE_VERSION = 7

# The probe share of the policies whose score reads attention probabilities (H2O, TOVA, SnapKV, FlowCache,
# PackCache): 8 of a frame's 64 queries (ZipCache-style probes, `models.attention.probe_queries`);
# docs/decisions/ "probe share".
PROBE_SHARE = 0.125
# What a probe commit computes, versioned apart from ENGINE_VERSION because only runs with probe < 1 change;
# part of the benchmark's resume key of those runs.
PROBE_PATH = 2

# The eviction period of H2O, TOVA, SnapKV, TempCache and PaFu-KV: evict once over budget, down to one chunk
# below it, so their keep (and, for TOVA and SnapKV, the commit's attention statistics) runs every second
# chunk; docs/decisions/ "eviction period".
EVICT_PERIOD = 2


@dataclass(frozen=True)
class EvictContext:
    chunk: int  # index of the chunk just committed
    newest_frames: tuple[int, int]  # [first, last] frame index of that chunk
    tokens_per_frame: int
    grid: int = 8  # tokens per side of a frame
    rotate: Callable | None = None  # (k (H, n, Dh), pos (n, 3)) -> rotated keys, as attention sees them
    budget: int | None = None  # the policy's per-layer budget (protection may grow with it); set by Policy.evict
    period: int = 1  # the policy's eviction period in chunks (TempCache merges into that many newest chunks)
    over_budget: bool = True  # some layer holds more than the budget before this keep (conservative)

    @property
    def chunk_frames(self) -> int:
        """Frames in the chunk just committed."""
        return self.newest_frames[1] - self.newest_frames[0] + 1


@dataclass(frozen=True)
class LayerEviction:
    """One layer's keep. Its arrays are its own copies (the step's record takes them without copying again)."""

    kept: np.ndarray  # token ids kept (cache order, which after an eviction is not time order)
    evicted: np.ndarray  # token ids evicted this time
    scores: np.ndarray | None  # score of every token present before eviction (cache order), if scored
    scored: np.ndarray | None = None  # the token ids `scores` belong to (the cache before the eviction)


@dataclass(frozen=True)
class Settings:
    """What every policy takes beside its scorer's own settings, and their neutral values; the registry's
    compositions set other defaults (`POLICIES`), users any of them (`params.py` reads the types from here)."""

    granularity: str = "token"  # the selector: token | frame | strata
    rope: str = "absolute"  # Realign wrapper: absolute | shift_sink | reindex (see rope_modes.py)
    layer_split: str = "uniform"  # LayerSplit wrapper: uniform | cake | prefixkv
    period: int = 1  # Period wrapper: evict once over budget, down to budget - (period - 1) chunks
    probe: float = 1.0  # share of a commit's queries whose attention probabilities are formed
    # (ZipCache probe tokens; 1 = all); only read when the policy observes probabilities
    storage: str = "fp32"  # the cache's storage (storage.Storage): dtype of older frame tokens
    salient_storage: str | None = None  # mixed precision: the most salient tokens at this dtype
    salient_share: float = 0.25  # share of the quantised tokens that count as salient
    quant: str = "channel"  # integer storage scheme: channel | token | hadamard
    residual: int = 0  # KIVI's full-precision residual (frames before the newest chunk kept fp32)
    admit: float = 0.0  # write-time admission: share of each chunk's tokens refused when it is committed


STORAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Storage))


class Policy:
    """A cache policy: a scorer (what it reads, protects and scores), a selector (token, frame or strata
    granularity), wrappers (layer split, period, RoPE re-alignment) and the cache's storage, composed at a
    per-layer token `budget` (None = unbounded). Build one with `policies.make_policy(name, ...)`; the stepper
    talks to it through `request`, `bind`, `check`, `max_tokens`, `evicts_after` and `evict`."""

    def __init__(
        self, scorer: Scorer, budget: int | None = None, settings: Settings = Settings(), name: str | None = None
    ):
        if budget is not None and (isinstance(budget, bool) or int(budget) != budget or budget <= 0):
            raise ValueError(f"budget must be a positive number of tokens, got {budget!r}")
        p = settings.probe
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise ValueError(f"probe must be a share of a commit's queries in (0, 1], got {p!r}")
        if settings.granularity not in scorer.granularities:
            raise ValueError(
                f"policy {scorer.name!r} works at granularity {' or '.join(scorer.granularities)}, "
                f"not {settings.granularity!r}"
            )
        self.scorer, self.budget, self.settings = scorer, budget, settings
        self._name = name or scorer.name  # a registry preset (admission = window + admit) keeps its own name
        self.selector = Selector(settings.granularity)
        self.wrappers = wrappers_for(settings.layer_split, settings.period, settings.rope, settings.admit)
        self.storage = Storage(**{k: getattr(settings, k) for k in STORAGE_FIELDS})
        self.uniform = all(w.uniform for w in self.wrappers)

    def __repr__(self) -> str:
        return f"Policy({self.scorer!r}, budget={self.budget}, {self.settings})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def probe(self) -> float:
        return self.settings.probe

    @property
    def period(self) -> int:
        return self.settings.period

    @property
    def attention_stats(self) -> str:
        """The attention statistics commit passes must record (models.attention.STATS): the most any part
        reads ("probs" when the scorer reads attention probabilities, or the CAKE split or mixed precision,
        which ranks by past attention, does). Only "probs" materialises attention: fused kernels never form the
        probabilities, so reading them is part of a policy's cost; "none" and "logits" commits run the same
        fused kernel as the denoise steps."""
        levels = [self.scorer.reads, *(w.reads for w in self.wrappers)]
        if self.storage.salient_storage is not None:
            levels.append("probs")
        return max(levels, key=STATS.index)

    @property
    def lazy_stats(self) -> bool:
        """Commits after which no layer evicts may skip the attention statistics: the scorer reads only the
        newest commit's, and no wrapper or the storage reads them."""
        return (
            self.scorer.reads_newest
            and all(w.reads == "none" for w in self.wrappers)
            and self.storage.salient_storage is None
        )

    def request(self) -> Request:
        """What the model must report at each commit for this policy (`observe.Request`)."""
        return Request(self.attention_stats, self.probe, self.lazy_stats, self.scorer.per_head)

    def bind(self, observer: Observer) -> None:
        """Attach the run's observer (the stepper builds it from `request`)."""
        self.scorer.bind(observer)

    def load_parts(self, models) -> None:
        """Load the scorer's learned parts from a models folder."""
        self.scorer.load_parts(models)

    def learned_head(self):
        return self.scorer.learned_head()

    def max_tokens(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int | None:
        """Most tokens per layer the cache can hold right after a commit (None = unbounded)."""
        if self.budget is None:
            return self.scorer.window_tokens(n_prompt, tokens_per_frame, chunk_frames)
        if self.scorer.per_head:  # heads holding fewer let others hold more tokens: no bound on the union
            return None
        return self.budget + chunk_frames * tokens_per_frame

    def min_budget(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int:
        """Fewest tokens per layer that hold everything the scorer protects at that budget (a smaller budget is
        rejected). Derived from `protected` on a synthetic full layer, never stated apart from it: the
        protected regions may grow with the budget (Deep Forcing's sink is half of it), so the search goes up
        from the prompt plus one chunk to the first budget b that protects at most b tokens (protection only
        grows with the budget, so any b below what a smaller one protects cannot hold either)."""
        layer, ctx = synthetic_layer(n_prompt, tokens_per_frame, chunk_frames)
        b = n_prompt + chunk_frames * tokens_per_frame
        while b <= len(layer):
            need = self._held_at(layer, dataclasses.replace(ctx, budget=b))
            if need <= b:
                return b
            b = need
        raise ValueError(f"policy {self.name!r} protects more than {len(layer)} tokens at every budget")

    def _held_at(self, layer: LayerCache, ctx: EvictContext) -> int:
        """Fewest tokens a layer (each head, for a per-head policy) holds after a keep at ctx.budget: the
        protected tokens and the frames every head of a per-head policy holds beyond them."""
        return int(self.scorer.protected(layer, ctx).sum()) + self.scorer.head_frames * ctx.tokens_per_frame

    def check(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> None:
        """Reject a budget below the protected size, before any work is done. A budget with less room above
        it than `period` - 1 chunks is accepted: the keep then stops at the protected size (`Period`) and
        runs as often as it must, so a period is a saving where it fits, never a reason to reject a budget."""
        if self.budget is None:
            return
        need = self.min_budget(n_prompt, tokens_per_frame, chunk_frames)
        if self.budget < need:
            raise ValueError(
                f"budget {self.budget} tokens is below the {need} tokens policy {self.name!r} always "
                f"keeps (prompt anchors, newest chunk and its protected frames); use at least {need}"
            )
        layer, ctx = synthetic_layer(n_prompt, tokens_per_frame, chunk_frames)
        held = self._held_at(layer, dataclasses.replace(ctx, budget=self.budget))
        if held > self.budget:  # protection that grows with the budget may outgrow it
            raise ValueError(
                f"budget {self.budget} tokens is below the {held} tokens policy {self.name!r} protects at that "
                f"budget (its protected share of the budget leaves no room); use a smaller share or {need} tokens"
            )

    def evicts_after(self, cache: KVCache, n_new: int) -> bool:
        """Whether the eviction after a commit of n_new tokens keeps fewer tokens than the cache will hold
        (conservative: True unless the budget is uniform over layers and every layer will fit)."""
        if self.budget is None or not self.uniform:
            return self.budget is not None
        return any(len(layer) + n_new > self.budget for layer in cache.layers)

    def evict(self, cache: KVCache, ctx: EvictContext) -> list[LayerEviction]:
        """One keep after a commit: the scorer's preparation, the wrappers' per-layer budgets, then per layer
        the scorer + selector's keep, the observer following it, the wrappers' work on the kept layer and the
        cache's storage."""
        ctx = dataclasses.replace(ctx, budget=self.budget, period=self.period, over_budget=self.evicts_after(cache, 0))
        scorer, observed = self.scorer, self.scorer.observed
        refused = [w.before_keep(self, cache, ctx) for w in self.wrappers]
        removed = scorer.prepare(cache, ctx)
        for gone in filter(None, refused):
            removed = [torch.cat([r, torch.from_numpy(g)]) for r, g in zip(removed, gone)]
        budgets = [self.budget] * len(cache.layers)
        for w in self.wrappers:
            budgets = w.budgets(self, cache, ctx, budgets)
        out = []
        for i, (layer, budget) in enumerate(zip(cache.layers, budgets)):
            held = None
            if scorer.per_head:  # a set per head: the layer keeps their union, each head its own
                held, scores = scorer.head_keep(i, layer, ctx, budget)
                present = layer.head_mask()
                held = held if present is None else held & present  # a dropped token does not come back
                idx = held.any(0).nonzero().flatten()
            else:
                idx, scores = scorer.keep(i, layer, ctx, budget, self.selector)
            sc = None if scores is None else scores.detach().float().numpy().copy()
            scored = None if scores is None else layer.meta["token_id"].numpy().copy()
            if len(idx) < len(layer):
                evicted, source = layer.keep_map(idx)
                if observed is not None:
                    observed.compact(i, source)
            else:
                evicted, source = torch.zeros(0, dtype=torch.long), None
            if held is not None:
                layer.set_heads(held if source is None else held.index_select(1, source))
            for w in self.wrappers:
                w.after_keep(self, layer, ctx)
            kept_scores = None if scores is None or source is None else scores[source]
            self.storage.apply(layer, ctx.newest_frames[0], functools.partial(_salience, kept_scores, observed, i))
            out.append(
                LayerEviction(
                    layer.meta["token_id"].numpy().copy(), torch.cat([removed[i], evicted]).numpy(), sc, scored
                )
            )
        settle(cache.layers)  # the keys this keep re-wrote or moved, re-rotated at once, in the eviction step
        return out


def _salience(scores: torch.Tensor | None, observed, layer_idx: int) -> torch.Tensor:
    """What mixed-precision storage ranks by: the policy's scores of the kept tokens, else past attention."""
    return scores if scores is not None else past_attention(observed, layer_idx)


SYNTHETIC_FRAMES = 256  # frames of the synthetic layer a minimum budget is derived on


@functools.lru_cache(maxsize=8)
def synthetic_layer(n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> tuple[LayerCache, EvictContext]:
    """A layer holding the prompt anchors and SYNTHETIC_FRAMES frames in time order, the newest chunk last, and
    the context of the eviction after that chunk's commit (what `min_budget` asks `protected` about).
    Read-only, built once per geometry: a budget check runs at every run's start."""
    F, T = SYNTHETIC_FRAMES, tokens_per_frame
    g = max(1, math.isqrt(T))
    n = n_prompt + F * T
    frame = torch.cat([torch.full((n_prompt,), -1), torch.arange(F).repeat_interleave(T)])
    cell = torch.cat([torch.arange(n_prompt), torch.arange(T).repeat(F)])
    meta = {
        "frame": frame,
        "y": cell // g,
        "x": cell % g,
        "token_id": torch.arange(n),
        "kind": torch.cat([torch.full((n_prompt,), KIND_PROMPT), torch.full((F * T,), KIND_FRAME)]),
    }
    z = torch.zeros(1, n, 1)
    layer = LayerCache(z, z.clone(), meta)
    chunk = F // chunk_frames - 1
    return layer, EvictContext(chunk, (chunk * chunk_frames, F - 1), T, g)
