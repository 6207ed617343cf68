"""Policy API: a policy looks at the cache after each commit and keeps a subset of tokens per layer.

kvpress style (NVIDIA/kvpress `ScorerPress`): a policy scores cached tokens; the shared ``select`` keeps the
protected tokens (prompt anchors, the newest chunk) and the top-scored rest up to the budget. This file
holds the minimal API the backend needs; the full policy library builds on it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..cache import DTYPES, KIND_FRAME, KIND_PROMPT, QUANT_SCHEMES, KVCache, LayerCache
from ..observe import Observer, Request
from .layer_split import LAYER_SPLITS, cake_budgets, prefixkv_budgets
from .rope_modes import ROPE_MODES, reindex, shift_sink
from .select import select, select_frames
from .signals import past_attention

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

    @property
    def chunk_frames(self) -> int:
        """Frames in the chunk just committed."""
        return self.newest_frames[1] - self.newest_frames[0] + 1


@dataclass(frozen=True)
class LayerEviction:
    kept: np.ndarray  # token ids kept (cache order, which after an eviction is not time order)
    evicted: np.ndarray  # token ids evicted this time
    scores: np.ndarray | None  # score of every token present before eviction (cache order), if scored
    scored: np.ndarray | None = None  # the token ids `scores` belong to (the cache before the eviction)


@dataclass
class Policy:
    """Base class. Subclasses implement ``score`` (higher = keep) or override ``keep_indices``.

    budget: tokens per layer kept after each eviction (None = unbounded); granularity: keep single tokens
    or whole frames (a frame's score is the mean of its tokens' scores)."""

    name: ClassVar[str] = "base"
    granularities: ClassVar[tuple[str, ...]] = ("token", "frame")
    reads: ClassVar[str] = "none"  # commit statistics `score` reads: none | logits (raw q.k) | probs (attention)
    reads_newest: ClassVar[bool] = False  # the score reads only the newest commit's statistics (`recent`), so a
    # commit after which no layer evicts need not record them (`lazy_stats`)
    budget: int | None = None
    granularity: str = "token"
    rope: str = "absolute"  # absolute | shift_sink | reindex (see rope_modes.py)
    storage: str = "fp32"  # dtype older frame tokens are stored at (fp32 bf16 int8 int4 int2)
    salient_storage: str | None = None  # mixed precision (MiKV / ZipCache): the most salient tokens at this dtype
    salient_share: float = 0.25  # share of the quantised tokens that count as salient
    quant: str = "channel"  # integer storage scheme: channel (KIVI keys / per-head values) | token
    residual: int = 0  # KIVI's full-precision residual: the newest frames before the newest chunk kept fp32
    layer_split: str = "uniform"  # uniform | cake | prefixkv: how the total budget is split over layers
    probe: float = 1.0  # share of a commit's queries whose attention probabilities are formed
    # (ZipCache probe tokens; 1 = all); only read when attention_stats is probs
    period: int = 1  # evict once the cache is over budget, down to budget - (period - 1) chunks,
    # so the keep runs about once every `period` chunks (see `targets`)
    observed: Observer | None = field(default=None, init=False, repr=False, compare=False)  # this run's observed
    # attention (`bind`): the policy's own accumulators

    def __post_init__(self):
        if self.budget is not None and (
            isinstance(self.budget, bool) or int(self.budget) != self.budget or self.budget <= 0
        ):
            raise ValueError(f"budget must be a positive number of tokens, got {self.budget!r}")
        if self.granularity not in self.granularities:
            raise ValueError(
                f"policy {self.name!r} works at granularity {' or '.join(self.granularities)}, not {self.granularity!r}"
            )
        if self.rope not in ROPE_MODES:
            raise ValueError(f"rope must be one of {', '.join(ROPE_MODES)}, got {self.rope!r}")
        for d in (self.storage, self.salient_storage):
            if d is not None and d not in DTYPES:
                raise ValueError(f"storage dtype must be one of {', '.join(DTYPES)}, got {d!r}")
        if self.quant not in QUANT_SCHEMES:
            raise ValueError(f"quant must be one of {', '.join(QUANT_SCHEMES)}, got {self.quant!r}")
        if self.layer_split not in LAYER_SPLITS:
            raise ValueError(f"layer_split must be one of {', '.join(LAYER_SPLITS)}, got {self.layer_split!r}")
        if not 0.0 <= self.salient_share <= 1.0:
            raise ValueError(f"salient_share must be in [0, 1], got {self.salient_share}")
        if isinstance(self.probe, bool) or not isinstance(self.probe, (int, float)) or not 0.0 < self.probe <= 1.0:
            raise ValueError(f"probe must be a share of a commit's queries in (0, 1], got {self.probe!r}")
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"period must be a whole number of chunks >= 1, got {self.period!r}")
        if isinstance(self.residual, bool) or int(self.residual) != self.residual or self.residual < 0:
            raise ValueError(f"residual must be a whole number of frames >= 0, got {self.residual!r}")

    @property
    def attention_stats(self) -> str:
        """The attention statistics commit passes must record for this policy (model.STATS): "probs" when its
        score reads attention probabilities, or the CAKE layer split or mixed precision (salient tokens by
        past attention) does; "logits" for raw q.k sums only; else "none". Only "probs" materialises
        attention: FlashAttention-style fused kernels never form the probabilities, so reading them is part
        of a policy's cost (the benchmark counts it in the overhead); "none" and "logits" commits run the
        same fused kernel as the denoise steps."""
        if self.layer_split == "cake" or self.salient_storage is not None:
            return "probs"
        return self.reads

    def request(self) -> Request:
        """What the model must report at each commit for this policy (`observe.Request`)."""
        return Request(self.attention_stats, self.probe, self.lazy_stats)

    def load_parts(self, models) -> None:
        """Load the learned parts this policy scores with from a models folder (none by default)."""

    def learned_head(self):
        """The salience head this policy scores with, if it has one (None by default)."""
        return None

    def bind(self, observer: Observer) -> None:
        """Attach the run's observer (the stepper builds it from `request`)."""
        self.observed = observer

    def max_tokens(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int | None:
        """Most tokens per layer the cache can hold right after a commit (None = unbounded)."""
        return None if self.budget is None else self.budget + chunk_frames * tokens_per_frame

    def min_budget(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int:
        """Fewest tokens per layer that hold everything the policy protects at that budget (a smaller budget is
        rejected). Derived from `protected` on a synthetic full layer, never stated apart from it: the
        protected regions may grow with the budget (Deep Forcing's sink is half of it), so the search goes up
        from the prompt plus one chunk to the first budget b that protects at most b tokens (protection only
        grows with the budget, so any b below what a smaller one protects cannot hold either)."""
        layer, ctx = synthetic_layer(n_prompt, tokens_per_frame, chunk_frames)
        b = n_prompt + chunk_frames * tokens_per_frame
        while b <= len(layer):
            need = int(dataclasses.replace(self, budget=b).protected(layer, ctx).sum())
            if need <= b:
                return b
            b = need
        raise ValueError(f"policy {self.name!r} protects more than {len(layer)} tokens at every budget")

    def check(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> None:
        """Reject a budget below the protected size, before any work is done. A budget with less room above
        it than `period` - 1 chunks is accepted: the keep then stops at the protected size (`targets`) and
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
        held = int(self.protected(layer, ctx).sum())  # protection that grows with the budget may outgrow it
        if held > self.budget:
            raise ValueError(
                f"budget {self.budget} tokens is below the {held} tokens policy {self.name!r} protects at that "
                f"budget (its protected share of the budget leaves no room); use a smaller share or {need} tokens"
            )

    def protected(self, layer: LayerCache, ctx: EvictContext) -> torch.Tensor:
        """Boolean (n,) of tokens never evicted: prompt anchors and the newest chunk."""
        m = layer.meta  # numpy on views: this runs on every layer, every commit
        return torch.from_numpy((m["kind"].numpy() == KIND_PROMPT) | (m["frame"].numpy() >= ctx.newest_frames[0]))

    def score(self, layer_idx: int, layer: LayerCache, ctx: EvictContext) -> torch.Tensor | None:
        return None

    def keep_indices(self, layer_idx: int, layer: LayerCache, ctx: EvictContext, budget: int | None):
        """-> (indices to keep, scores or None) for this layer's `budget` (tokens). Default: protected +
        the top-scored rest up to the budget."""
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        scores = self.score(layer_idx, layer, ctx)
        prot = self.protected(layer, ctx)
        if self.granularity in ("frame", "strata"):
            return select_frames(scores, prot, layer.meta["frame"], budget, self.granularity == "strata"), scores
        return select(scores, prot, budget, layer.meta["token_id"]), scores

    def layer_budgets(self, cache: KVCache, ctx: EvictContext) -> list[int | None]:
        """Per-layer token budgets: the same for every layer (`uniform`) or split by attention shape."""
        if self.budget is None or self.layer_split == "uniform":
            return [self.budget] * len(cache.layers)
        prot = [int(self.protected(layer, ctx).sum()) for layer in cache.layers]
        sizes = [len(layer) for layer in cache.layers]
        if self.layer_split == "cake":
            return cake_budgets(cache, self.budget, prot, sizes, self.observed)
        scores = [self.score(i, layer, ctx) for i, layer in enumerate(cache.layers)]
        free = [~self.protected(layer, ctx) for layer in cache.layers]
        return prefixkv_budgets([s[f] for s, f in zip(scores, free)], self.budget, prot, sizes)

    def targets(self, cache: KVCache, ctx: EvictContext, budgets: list[int | None]) -> list[int | None]:
        """What each layer keeps this time: its budget, or with `period` > 1 and the layer over budget,
        `period` - 1 chunks less, so that the next `period` - 1 commits fit without an eviction and the keep
        (and, for `reads_newest` policies, the commit's attention statistics) runs once every `period` chunks.
        Occupancy never exceeds the budget after an eviction step. Deep Forcing compresses only when its
        window reaches its maximum (arXiv 2512.05081) and R-KV / FlowCache when a buffer of new tokens fills;
        a period counted in chunks is our reconstruction of that batching, and period = 1 is per-chunk eviction."""
        if self.period == 1:
            return budgets
        chunk = ctx.chunk_frames * ctx.tokens_per_frame
        out = []
        for layer, b in zip(cache.layers, budgets):
            if b is not None and len(layer) > b:  # never below what the layer must keep (a split's budget
                b = max(b - (self.period - 1) * chunk, int(self.protected(layer, ctx).sum()))  # may be tight)
            out.append(b)
        return out

    def evicts_after(self, cache: KVCache, n_new: int) -> bool:
        """Whether the eviction after a commit of n_new tokens keeps fewer tokens than the cache will hold
        (conservative: True unless the budget is uniform over layers and every layer will fit)."""
        if self.budget is None or self.layer_split != "uniform":
            return self.budget is not None
        return any(len(layer) + n_new > self.budget for layer in cache.layers)

    @property
    def lazy_stats(self) -> bool:
        """Commits after which no layer evicts may skip the attention statistics: the score reads only the
        newest commit's (`reads_newest`), and neither the CAKE split nor mixed precision reads them."""
        return self.reads_newest and self.layer_split == "uniform" and self.salient_storage is None

    def prepare(self, cache: KVCache, ctx: EvictContext) -> list[torch.Tensor]:
        """Work before selection (merging, scoring new tokens); returns token ids removed per layer."""
        return [torch.zeros(0, dtype=torch.long) for _ in cache.layers]

    def evict(self, cache: KVCache, ctx: EvictContext) -> list[LayerEviction]:
        out = []
        removed = self.prepare(cache, ctx)
        for i, (layer, budget) in enumerate(
            zip(cache.layers, self.targets(cache, ctx, self.layer_budgets(cache, ctx)))
        ):
            idx, scores = self.keep_indices(i, layer, ctx, budget)
            sc = None if scores is None else scores.detach().float().numpy().copy()
            scored = None if scores is None else layer.meta["token_id"].numpy().copy()
            if len(idx) < len(layer):
                evicted, source = layer.keep_map(idx)
                if self.observed is not None:
                    self.observed.compact(i, source)
            else:
                evicted, source = torch.zeros(0, dtype=torch.long), None
            self.realign(layer)
            self.store(i, layer, ctx, None if scores is None or source is None else scores[source])
            out.append(
                LayerEviction(
                    layer.meta["token_id"].numpy().copy(), torch.cat([removed[i], evicted]).numpy(), sc, scored
                )
            )
        return out

    def store(self, layer_idx: int, layer: LayerCache, ctx: EvictContext, scores: torch.Tensor | None) -> None:
        """KV quantisation as a storage option: frame tokens older than the newest chunk and the `residual`
        frames before it that are still fp32 move to `storage`; with `salient_storage`, the top
        `salient_share` of them by the policy's score (else by past attention) go there instead (mixed
        precision, MiKV / ZipCache style). Prompt anchors, the newest chunk and the residual stay fp32: KIVI
        (arXiv 2402.02750) keeps its newest R tokens (R = 32-128) in full precision the same way; R counted
        in frames here is our reconstruction."""
        if self.storage == "fp32" and self.salient_storage is None:
            return
        m = layer.meta
        todo = (
            ((m["kind"] == KIND_FRAME) & (m["frame"] < ctx.newest_frames[0] - self.residual) & (m["dtype"] == 0))
            .nonzero()
            .flatten()
        )
        if len(todo) == 0:
            return
        if self.salient_storage is not None:
            s = (scores if scores is not None else past_attention(self.observed, layer_idx))[todo]
            n_sal = int(round(self.salient_share * len(todo)))
            top = s.float().topk(n_sal).indices if n_sal else torch.zeros(0, dtype=torch.long)
            sal = torch.zeros(len(todo), dtype=torch.bool)
            sal[top] = True
            layer.set_dtype(todo[sal], self.salient_storage, self.quant)
            todo = todo[~sal]
        layer.set_dtype(todo, self.storage, self.quant)

    def realign(self, layer: LayerCache) -> None:
        """Apply the policy's RoPE mode to the kept tokens' positions."""
        if self.rope == "reindex":
            reindex(layer)
        elif self.rope == "shift_sink":
            shift_sink(layer, getattr(self, "sink_frames", 0))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "budget": self.budget,
            "granularity": self.granularity,
            "rope": self.rope,
            "storage": self.storage,
            "salient_storage": self.salient_storage,
            "quant": self.quant,
            "residual": self.residual,
            "layer_split": self.layer_split,
            "period": self.period,
        }


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
