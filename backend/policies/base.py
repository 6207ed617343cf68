"""Policy API: a policy looks at the cache after each commit and keeps a subset of tokens per layer.

kvpress style (NVIDIA/kvpress `ScorerPress`): a policy scores cached tokens; the shared ``select`` keeps the
protected tokens (prompt anchors, the newest chunk) and the top-scored rest up to the budget. This file
holds the minimal API the backend needs; the full policy library builds on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from ..cache import DTYPES, KIND_FRAME, KIND_PROMPT, QUANT_SCHEMES, KVCache, LayerCache
from .layer_split import LAYER_SPLITS, cake_budgets, prefixkv_budgets
from .rope_modes import ROPE_MODES, reindex, shift_sink


# What an evicting run computes can change with the cache code even when no setting does: the benchmark's
# resume keys include this, so bump it with such a change (2: the order-free keep_map, session 12; 3: PaFu-KV's
# head batched over layers, predictions equal to float rounding, and the eviction timings re-measured, session 13;
# 4: selection and keep bookkeeping in numpy, every decision the same, the eviction timings re-measured;
# 5: FlowCache's, PackCache's and TempCache's scoring in numpy (float64 decay fit and water-fill; FlowCache's
# redundancy summed in another order: rare near-ties can flip), `protected` in numpy;
# 6: commits materialise attention only for policies that read its statistics (the others, and the full-cache
# reference, run the fused kernel: outputs equal to float rounding, timings changed), its cost measured);
# 7: RoPE from per-axis tables and one complex product (the same bits), a re-indexing eviction re-rotates
# only the moved keys and at once (the cost moves from the next pass into the eviction step), FlowCache's and
# TempCache's key norms memoised and FlowCache's sums as matrix-vector products (float rounding), timings
# re-measured.
ENGINE_VERSION = 7

# The probe share of the policies whose score reads attention probabilities (H2O, TOVA, SnapKV, FlowCache,
# PackCache): 8 of a frame's 64 queries (ZipCache-style probes, `model.probe_queries`). Chosen on 6
# validation prompts by a rule fixed in advance: no mean PSNR loss beyond 0.5 dB and no significant loss of a
# world-consistency score against every query, at 1/8 and 1/4 (docs/benchmarks/probe_validation/).
PROBE_SHARE = 0.125
# What a probe commit computes, versioned apart from ENGINE_VERSION because only runs with probe < 1 change:
# 2: the probes' raw q.k sums come from the probes too and their logits are formed from scaled queries (no
# copy of the keys), equal to float rounding to version 1 (runs of docs/benchmarks/probe_validation/ and
# guided6_probe/); part of the benchmark's resume key of those runs.
PROBE_PATH = 2

# The eviction period of H2O, TOVA, SnapKV, TempCache and PaFu-KV: evict once over budget, down to one chunk
# below it, so their keep (and, for TOVA and SnapKV, the commit's attention statistics) runs every second
# chunk. Chosen on 6 validation prompts by a rule fixed in advance: no mean PSNR loss beyond 0.5 dB and no
# significant loss of a world-consistency score against period 1, at 1/8 and 1/4; Deep Forcing, FlowCache
# and PackCache lost more than 0.5 dB at 1/4 and keep period 1 (docs/benchmarks/period_validation/).
EVICT_PERIOD = 2

@dataclass(frozen=True)
class EvictContext:
    chunk: int               # index of the chunk just committed
    newest_frames: tuple[int, int]   # [first, last] frame index of that chunk
    tokens_per_frame: int
    grid: int = 8            # tokens per side of a frame
    rotate: Callable | None = None   # (k (H, n, Dh), pos (n, 3)) -> rotated keys, as attention sees them

    @property
    def chunk_frames(self) -> int:
        """Frames in the chunk just committed."""
        return self.newest_frames[1] - self.newest_frames[0] + 1


@dataclass(frozen=True)
class LayerEviction:
    kept: np.ndarray         # token ids kept (cache order, which after an eviction is not time order)
    evicted: np.ndarray      # token ids evicted this time
    scores: np.ndarray | None  # score of every token present before eviction (cache order), if scored


@dataclass
class Policy:
    """Base class. Subclasses implement ``score`` (higher = keep) or override ``keep_indices``.

    budget: tokens per layer kept after each eviction (None = unbounded); granularity: keep single tokens
    or whole frames (a frame's score is the mean of its tokens' scores)."""

    name: ClassVar[str] = "base"
    granularities: ClassVar[tuple[str, ...]] = ("token", "frame")
    reads: ClassVar[str] = "none"      # commit statistics `score` reads: none | logits (raw q.k) | probs (attention)
    reads_newest: ClassVar[bool] = False  # the score reads only the newest commit's statistics (`recent`), so a
                                          # commit after which no layer evicts need not record them (`lazy_stats`)
    budget: int | None = None
    granularity: str = "token"
    rope: str = "absolute"             # absolute | shift_sink | reindex (see rope_modes.py)
    storage: str = "fp32"              # dtype older frame tokens are stored at (fp32 bf16 int8 int4 int2)
    salient_storage: str | None = None  # mixed precision (MiKV / ZipCache): the most salient tokens at this dtype
    salient_share: float = 0.25        # share of the quantised tokens that count as salient
    quant: str = "channel"             # integer storage scheme: channel (KIVI keys / per-head values) | token
    residual: int = 0                  # KIVI's full-precision residual: the newest frames before the newest chunk kept fp32
    layer_split: str = "uniform"       # uniform | cake | prefixkv: how the total budget is split over layers
    probe: float = 1.0                 # share of a commit's queries whose attention probabilities are formed
                                       # (ZipCache probe tokens; 1 = all); only read when attention_stats is probs
    period: int = 1                    # evict once the cache is over budget, down to budget - (period - 1) chunks,
                                       # so the keep runs about once every `period` chunks (see `targets`)

    def __post_init__(self):
        if self.budget is not None and (isinstance(self.budget, bool) or int(self.budget) != self.budget
                                        or self.budget <= 0):
            raise ValueError(f"budget must be a positive number of tokens, got {self.budget!r}")
        if self.granularity not in self.granularities:
            raise ValueError(f"policy {self.name!r} works at granularity {' or '.join(self.granularities)}, "
                             f"not {self.granularity!r}")
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

    def max_tokens(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int | None:
        """Most tokens per layer the cache can hold right after a commit (None = unbounded)."""
        return None if self.budget is None else self.budget + chunk_frames * tokens_per_frame

    def min_budget(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int:
        """Fewest tokens per layer that hold the protected regions (a smaller budget is rejected)."""
        return n_prompt + chunk_frames * tokens_per_frame

    def check(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> None:
        """Reject a budget below the protected size, before any work is done. A budget with less room above
        it than `period` - 1 chunks is accepted: the keep then stops at the protected size (`targets`) and
        runs as often as it must, so a period is a saving where it fits, never a reason to reject a budget."""
        need = self.min_budget(n_prompt, tokens_per_frame, chunk_frames)
        if self.budget is not None and self.budget < need:
            raise ValueError(f"budget {self.budget} tokens is below the {need} tokens policy {self.name!r} always "
                             f"keeps (prompt anchors, newest chunk and its protected frames); use at least {need}")

    def protected(self, layer: LayerCache, ctx: EvictContext) -> torch.Tensor:
        """Boolean (n,) of tokens never evicted: prompt anchors and the newest chunk."""
        m = layer.meta                                   # numpy on views: this runs on every layer, every commit
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
            return cake_budgets(cache, self.budget, prot, sizes)
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
            if b is not None and len(layer) > b:       # never below what the layer must keep (a split's budget
                b = max(b - (self.period - 1) * chunk, int(self.protected(layer, ctx).sum()))   # may be tight)
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
        for i, (layer, budget) in enumerate(zip(cache.layers, self.targets(cache, ctx, self.layer_budgets(cache, ctx)))):
            idx, scores = self.keep_indices(i, layer, ctx, budget)
            sc = None if scores is None else scores.detach().float().numpy().copy()
            if len(idx) < len(layer):
                evicted, source = layer.keep_map(idx)
            else:
                evicted, source = torch.zeros(0, dtype=torch.long), None
            self.realign(layer)
            self.store(layer, ctx, None if scores is None or source is None else scores[source])
            out.append(LayerEviction(layer.meta["token_id"].numpy().copy(),
                                     torch.cat([removed[i], evicted]).numpy(), sc))
        return out

    def store(self, layer: LayerCache, ctx: EvictContext, scores: torch.Tensor | None) -> None:
        """KV quantisation as a storage option: frame tokens older than the newest chunk and the `residual`
        frames before it that are still fp32 move to `storage`; with `salient_storage`, the top
        `salient_share` of them by the policy's score (else by past attention) go there instead (mixed
        precision, MiKV / ZipCache style). Prompt anchors, the newest chunk and the residual stay fp32: KIVI
        (arXiv 2402.02750) keeps its newest R tokens (R = 32-128) in full precision the same way; R counted
        in frames here is our reconstruction."""
        if self.storage == "fp32" and self.salient_storage is None:
            return
        m = layer.meta
        todo = ((m["kind"] == KIND_FRAME) & (m["frame"] < ctx.newest_frames[0] - self.residual)
                & (m["dtype"] == 0)).nonzero().flatten()
        if len(todo) == 0:
            return
        if self.salient_storage is not None:
            s = (scores if scores is not None else m["attn_sum"] / m["attn_count"].clamp_min(1))[todo]
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
        return {"name": self.name, "budget": self.budget, "granularity": self.granularity, "rope": self.rope,
                "storage": self.storage, "salient_storage": self.salient_storage, "quant": self.quant, "residual": self.residual,
                "layer_split": self.layer_split, "period": self.period}


def _np(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array (shared memory, no copy)."""
    return t.detach().numpy()


def _order_desc(values: np.ndarray) -> np.ndarray:
    """Positions of `values` best first, ties in their given order, NaN first: torch's stable descending
    sort (numpy's argsort would put NaN last; NaN has no rank, so that rare case goes through torch)."""
    if np.isnan(values).any():
        return torch.sort(torch.from_numpy(values), descending=True, stable=True).indices.numpy()
    return np.argsort(-values, kind="stable")


def select(scores: torch.Tensor, protected: torch.Tensor, budget: int, token_id: torch.Tensor | None = None) -> torch.Tensor:
    """Keep every protected token plus the highest-scored others, `budget` tokens in all (ties broken
    towards newer tokens: higher `token_id`, else later positions). Returns sorted cache indices.

    The index bookkeeping of selection runs in numpy on views of the tensors: it runs on every layer after
    every commit, on a few thousand tokens, where a torch op's fixed cost (several microseconds) is most of
    the work; numpy's is a fraction of it, and every decision is the same (tests against plain loops)."""
    prot = _np(protected)
    n_prot = int(prot.sum())
    if n_prot > budget:
        raise ValueError(f"budget {budget} tokens is below the {n_prot} protected tokens "
                         "(prompt anchors + newest chunk); raise the budget")
    free = np.flatnonzero(~prot)
    k = budget - n_prot
    keep = prot.copy()
    if k > 0 and len(free):
        values = _np(scores.float())[free]
        age = None if token_id is None else _np(token_id)[free]
        keep[_top_newest(values, free, k, age)] = True
    return torch.from_numpy(np.flatnonzero(keep))


def top_newest(values: torch.Tensor, idx: torch.Tensor, k: int, age: torch.Tensor | None = None) -> torch.Tensor:
    """The k entries of idx with the highest values, ties going to the newest (highest `age`, a token id;
    by default the position in idx): what a stable descending sort of the newest-first order keeps, done in
    O(n) with the k-th value as a threshold (the eviction runs every chunk on a few thousand tokens)."""
    return torch.from_numpy(_top_newest(_np(values), _np(idx), k, None if age is None else _np(age)))


def _top_newest(values: np.ndarray, idx: np.ndarray, k: int, age: np.ndarray | None = None) -> np.ndarray:
    """`top_newest` on numpy arrays (ages distinct, as token ids and positions are)."""
    if k >= len(idx) or k <= 0:
        return idx if k > 0 else idx[:0]
    age = np.arange(len(idx)) if age is None else age
    if np.isnan(values).any():                                        # NaN has no rank: a full sort
        newest_first = np.argsort(-age, kind="stable")
        return idx[newest_first[_order_desc(values[newest_first])[:k]]]
    thr = np.partition(values, len(values) - k)[len(values) - k]      # the k-th largest
    chosen = values > thr
    ties = np.flatnonzero(values == thr)
    need = k - int(chosen.sum())                                      # >= 1: thr itself is among the top k
    if need < len(ties):                                              # the newest of the tied
        ties = ties[np.argpartition(-age[ties], need - 1)[:need]]
    chosen[ties] = True
    return idx[chosen]


def select_frames(scores: torch.Tensor, protected: torch.Tensor, frame: torch.Tensor, budget: int,
                  strata: bool = False) -> torch.Tensor:
    """Frame granularity: keep every protected token, then whole frames by mean score (newer on ties)
    while they fit in the budget. Returns sorted cache indices.

    strata: first the best frame of each of K equal spans of frame index over the evictable frames (K =
    the frames that fit), then the rest by score: the kept history stays spread over time, as a uniform
    subsample's is, and salience picks within each span (see `strata_first`).

    Frame indices address per-frame sums directly (no unique / searchsorted / isin), and the bookkeeping
    runs in numpy (see `select`); the per-frame sums stay a torch float32 index_add, as before."""
    prot = _np(protected)
    n_prot = int(prot.sum())
    if n_prot > budget:
        raise ValueError(f"budget {budget} tokens is below the {n_prot} protected tokens "
                         "(prompt anchors + newest chunk); raise the budget")
    free = ~prot
    fr = _np(frame)
    ff = fr[free]
    if len(ff) == 0:
        return torch.from_numpy(np.flatnonzero(prot))
    lo = int(ff.min())                                                # frames are >= 0; prompt tokens are protected
    ff = ff - lo
    counts = np.bincount(ff)                                          # (F,) tokens per frame index
    sums = torch.zeros(len(counts)).index_add_(0, torch.from_numpy(ff), scores[torch.from_numpy(free)].float())
    frames = np.flatnonzero(counts)                                   # ascending frame index (minus lo)
    cnt = counts[frames]
    means = _np(sums)[frames] / cnt.astype(np.float32)                # float32, as torch divided them
    newest_first = np.arange(len(frames) - 1, -1, -1)
    order = newest_first[_order_desc(means[newest_first])]
    room = budget - n_prot
    if strata:
        order = _strata_first(order, frames, room // int(cnt.max()))  # cnt >= 1: frames holding tokens
    if bool((cnt == cnt[0]).all()):                                   # equal frames: the greedy is a prefix
        chosen = frames[order[:room // int(cnt[0])]]
    else:
        chosen, c, fl = [], cnt.tolist(), frames.tolist()
        for j in order.tolist():                                      # greedy: best frames that still fit
            if c[j] <= room:
                chosen.append(fl[j])
                room -= c[j]
        chosen = np.asarray(chosen, dtype=np.int64)
    pick = np.zeros(len(counts) + 1, dtype=bool)                      # the extra slot: tokens of no free frame
    pick[chosen] = True
    keep = prot | (free & pick[np.clip(fr - lo, 0, len(counts))])
    return torch.from_numpy(np.flatnonzero(keep))


def strata_first(order: torch.Tensor, frames: torch.Tensor, k: int) -> torch.Tensor:
    """Reorder `order` (positions into `frames`, best first) so that the best frame of each of k equal
    spans of frame index [frames[0], frames[-1]] comes first (in `order`'s order), then the rest (ditto).
    Spans with no frame leave their slot to the best of the rest."""
    return torch.from_numpy(_strata_first(_np(order), _np(frames), k))


def _strata_first(order: np.ndarray, frames: np.ndarray, k: int) -> np.ndarray:
    n = len(frames)
    if k <= 0 or k >= n:
        return order
    lo, span = int(frames[0]), int(frames[-1]) - int(frames[0]) + 1
    stratum = ((frames[order] - lo) * k) // span                      # (n,) stratum of each frame, in order
    first_rank = np.full(k, n)
    np.minimum.at(first_rank, stratum, np.arange(n))                  # (k,) first rank in each stratum
    first = np.zeros(n, dtype=bool)
    first[first_rank[first_rank < n]] = True
    return np.concatenate([order[first], order[~first]])
