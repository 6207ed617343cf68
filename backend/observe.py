"""Observed attention: what a policy asks the model to report at each commit pass, and where it accumulates.

A policy states what it observes (`Request`: the statistics level, the probe share, whether only the newest
commit is read). The stepper builds one `Observer` per run for it; the model calls `Observer.commit` once per
layer after appending a commit's keys and values, with the attention statistics it computed over every cached
token (column sums and maxima of the probabilities, raw q.k sums). The observer folds them into its own
accumulators, aligned with the cache's positions, and the policy's eviction compacts them with the map the
cache's keep returns (`LayerCache.keep_map`). The cache itself holds no attention statistics.

Reading a signal the policy did not request raises `SignalNotRequested`: a policy whose score reads past
attention while requesting nothing would otherwise see zeros and behave like a FIFO window, silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .models.attention import STATS

QK_HISTORY = 4  # commits remembered in the raw-logit ring (Deep Forcing's R recent frames at chunk size 1)
# the columns of a layer's packed statistics (n, WIDTH) float32: one tensor per layer, so that following the
# cache's keep and growing with a commit are one op each, not one per field
COLUMNS = {"attn_sum": 0, "attn_max": 1, "attn_count": 2, "recent": 3}
WIDTH = len(COLUMNS) + QK_HISTORY


class LayerStats:
    """A layer's observed statistics, packed (n, WIDTH): `stats["attn_sum"]` etc. are column views (n,), and
    `stats["qk_hist"]` the ring (n, QK_HISTORY)."""

    def __init__(self, packed: torch.Tensor):
        self.packed = packed

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == "qk_hist":
            return self.packed[:, len(COLUMNS) :]
        return self.packed[:, COLUMNS[key]]

    def __len__(self) -> int:
        return self.packed.shape[0]

    def keys(self) -> tuple[str, ...]:
        return (*COLUMNS, "qk_hist")

    def values(self) -> list[torch.Tensor]:
        return [self[k] for k in self.keys()]


class SignalNotRequested(RuntimeError):
    """A policy read an attention signal that its `Request` did not ask the model to compute."""


@dataclass(frozen=True)
class Request:
    kind: str = "none"  # STATS: none | logits (raw q.k sums) | probs (attention probabilities)
    probe: float = 1.0  # share of a commit's queries whose probabilities are formed (probs only)
    newest_only: bool = False  # only the newest commit's statistics are read: a commit after which no layer
    # evicts may skip them (`Observer.quiet`)
    regions: bool = False  # each head's attention shares over REGIONS are summed (per-head policies)

    def __post_init__(self):
        if self.kind not in STATS:
            raise ValueError(f"observed attention must be one of {', '.join(STATS)}, got {self.kind!r}")


def _level(kind: str) -> int:
    return STATS.index(kind)


@dataclass
class Observer:
    """Per-layer accumulators of the observed attention, aligned with the cache's positions.

    `kind` is what the model computes at each commit (at least the policy's request; more when the explorer
    records attention for its heatmaps), `allowed` what the policy may read (its own request). Policies can
    keep further per-token arrays in `extra` (PaFu-KV's predicted salience), which grow and compact with
    the cache like the statistics, and per-run values in `notes`. A run that observes nothing keeps no
    statistics (no upkeep)."""

    n_layer: int
    kind: str = "none"
    probe: float = 1.0
    allowed: str = "none"
    owner: str = "policy"
    wants_regions: bool = False  # the model reports each head's attention shares over REGIONS (`head_regions`)
    stats: list[LayerStats] = field(default_factory=list)
    extra: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # the policy's per-run values (PaFu-KV's last scored chunk,
    # PackCache's fitted decay); keys ending in "_ms" are timings, reported in the run's last record
    regions: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> each head's attention shares
    # over REGIONS (H, 4) at the newest commit with statistics: where each head looks (per-head policies)

    def __post_init__(self):
        if not self.stats:
            self.stats = [LayerStats(torch.zeros(0, WIDTH)) for _ in range(self.n_layer)]

    @property
    def keeps_stats(self) -> bool:
        return self.kind != "none"

    # ---------------------------------------------------------------- written by the model and the cache
    def commit(
        self,
        layer: int,
        n_total: int,
        colsum=None,
        colmax=None,
        logitsum=None,
        n_queries: int = 1,
        chunk: int = -1,
        regions: torch.Tensor | None = None,
    ) -> None:
        """Extend layer `layer`'s arrays to the cache's `n_total` tokens (new tokens start at zero), then fold
        one commit pass's statistics over all of them: colsum / colmax (H, n) of the probabilities and
        logitsum (H, n) of the raw scaled logits, summed over the n_queries recorded queries (all of the
        chunk's, or its probes). The qk ring keeps the mean raw logit of each of the last QK_HISTORY commits;
        past attention is normalised later by attn_count (H2O / ZipCache). colsum None ("logits"): only the
        ring; logitsum None ("none"): nothing but the extension. `regions` (H, 4), each head's attention shares
        over REGIONS at this pass (`models.attention.region_shares`), replaces the layer's `regions`."""
        self.grow(layer, n_total)
        s = self.stats[layer]
        if logitsum is None:
            return
        s["qk_hist"][:, chunk % QK_HISTORY] = logitsum.mean(0) / n_queries
        if colsum is None:
            return
        if regions is not None:
            self.regions[layer] = regions
        m = colsum.mean(0)  # head mean, (n,)
        s["attn_sum"].add_(m)
        s["attn_max"].copy_(torch.maximum(s["attn_max"], colmax.mean(0)))
        s["attn_count"].add_(n_queries)
        s["recent"].copy_(m / n_queries)

    def grow(self, layer: int, n_total: int) -> None:
        """Extend layer `layer`'s arrays to the cache's `n_total` tokens (new tokens start at zero)."""
        s = self.stats[layer]
        if self.keeps_stats and n_total > len(s):
            s.packed = torch.cat([s.packed, torch.zeros(n_total - len(s), WIDTH)])
        for arrays in self.extra.values():
            if n_total > len(arrays[layer]):
                arrays[layer] = torch.cat([arrays[layer], torch.zeros(n_total - len(arrays[layer]))])

    def compact(self, layer: int, source: torch.Tensor | None) -> None:
        """Follow the cache's keep: `source` (m,) is the old position of each kept token's new position. As the
        cache does, only the rows that move are copied (into the evicted slots), then the arrays are cut."""
        if source is None or (not self.keeps_stats and not self.extra):
            return
        src = source.numpy()
        moved = np.flatnonzero(src != np.arange(len(src)))
        dst, frm = torch.from_numpy(moved), source[moved]
        if self.keeps_stats:
            p = self.stats[layer].packed
            p.index_copy_(0, dst, p.index_select(0, frm))
            self.stats[layer].packed = p[: len(src)]
        for arrays in self.extra.values():
            a = arrays[layer]
            a.index_copy_(0, dst, a.index_select(0, frm))
            arrays[layer] = a[: len(src)]

    def quiet(self) -> Observer:
        """This observer for a commit whose statistics nothing reads: the model computes none (fused
        kernel), the arrays only grow."""
        return _Quiet(self)

    def add_extra(self, name: str, sizes: list[int]) -> list[torch.Tensor]:
        """Per-layer arrays that grow and compact with the cache: zeros of the cache's current `sizes` (its
        occupancy per layer) when first asked for."""
        if name not in self.extra:
            self.extra[name] = [torch.zeros(n) for n in sizes]
        return self.extra[name]

    def clone(self) -> Observer:
        return Observer(
            self.n_layer,
            self.kind,
            self.probe,
            self.allowed,
            self.owner,
            self.wants_regions,
            [LayerStats(s.packed.clone()) for s in self.stats],
            {k: [a.clone() for a in v] for k, v in self.extra.items()},
            {k: dict(v) if isinstance(v, dict) else v for k, v in self.notes.items()},
            dict(self.regions),
        )

    # ---------------------------------------------------------------- read by the policy
    def _need(self, kind: str, what: str, check: bool) -> None:
        if check and _level(self.allowed) < _level(kind):
            raise SignalNotRequested(
                f"{self.owner} reads {what}, which needs the {kind!r} attention statistics, "
                f"but it requests {self.allowed!r}: state it in its observed request "
                f"(reads = {kind!r})"
            )
        if _level(self.kind) < _level(kind):
            raise SignalNotRequested(f"{self.owner}: {what} was not computed in this run (observed {self.kind!r})")

    def past_attention(self, layer: int, check: bool = True) -> torch.Tensor:
        """Accumulated attention normalised by the queries that could see each token (kvpress
        `ObservedAttentionPress`; ZipCache's normalisation): (n,)."""
        self._need("probs", "past attention", check)
        s = self.stats[layer]
        return s["attn_sum"] / s["attn_count"].clamp_min(1.0)

    def recent(self, layer: int, check: bool = True) -> torch.Tensor:
        """Mean attention each token received from the newest committed chunk's queries: (n,)."""
        self._need("probs", "the newest chunk's attention", check)
        return self.stats[layer]["recent"].clone()

    def head_regions(self, layer: int, check: bool = True) -> torch.Tensor | None:
        """Each head's attention shares over REGIONS (first frame, middle history, newest past frame, the chunk
        itself) at the newest commit with statistics: (H, 4), or None before the first (how the per-head
        policies tell heads that need history from those that do not)."""
        self._need("probs", "per-head attention regions", check)
        return self.regions.get(layer)

    def qk_history(self, layer: int, check: bool = True) -> torch.Tensor:
        """Mean raw logit q.k / sqrt(d) from each of the last QK_HISTORY commits (a ring by chunk): (n, R)."""
        self._need("logits", "raw q.k sums", check)
        return self.stats[layer]["qk_hist"]


class _Quiet:
    """An Observer seen by one commit that computes no statistics."""

    kind, probe = "none", 1.0

    def __init__(self, obs: Observer):
        self._obs = obs

    def grow(self, layer: int, n_total: int) -> None:
        self._obs.grow(layer, n_total)

    def commit(self, layer: int, n_total: int, *args, **kwargs) -> None:
        self._obs.grow(layer, n_total)


def observer_for(request: Request, n_layer: int, record: str | None = None, owner: str = "policy") -> Observer:
    """The run's observer: the statistics the policy requests, or more when `record` (a STATS level, the
    explorer's heatmaps) asks for more. Probe queries stand in for every query only where the policy itself
    reads probabilities, so recording more than a policy reads changes none of its inputs."""
    kind = request.kind if record is None or _level(record) < _level(request.kind) else record
    probe = request.probe if request.kind == "probs" else 1.0
    return Observer(n_layer, kind, probe, request.kind, owner, request.regions)
