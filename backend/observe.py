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

import torch

from .models.attention import STATS

QK_HISTORY = 4  # commits remembered in the raw-logit ring (Deep Forcing's R recent frames at chunk size 1)
FIELDS = ("attn_sum", "attn_max", "attn_count", "recent")  # (n,) float32 each; qk_hist is (n, QK_HISTORY)


class SignalNotRequested(RuntimeError):
    """A policy read an attention signal that its `Request` did not ask the model to compute."""


@dataclass(frozen=True)
class Request:
    kind: str = "none"  # STATS: none | logits (raw q.k sums) | probs (attention probabilities)
    probe: float = 1.0  # share of a commit's queries whose probabilities are formed (probs only)
    newest_only: bool = False  # only the newest commit's statistics are read: a commit after which no layer
    # evicts may skip them (`Observer.quiet`)

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
    keep further per-token arrays in `extra` (PaFu-KV's predicted salience): they grow and compact with the
    cache like the statistics."""

    n_layer: int
    kind: str = "none"
    probe: float = 1.0
    allowed: str = "none"
    owner: str = "policy"
    stats: list[dict[str, torch.Tensor]] = field(default_factory=list)
    extra: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.stats:
            self.stats = [_empty() for _ in range(self.n_layer)]

    # ---------------------------------------------------------------- written by the model and the cache
    def commit(
        self, layer: int, n_total: int, colsum=None, colmax=None, logitsum=None, n_queries: int = 1, chunk: int = -1
    ) -> None:
        """Extend layer `layer`'s arrays to the cache's `n_total` tokens (new tokens start at zero), then fold
        one commit pass's statistics over all of them: colsum / colmax (H, n) of the probabilities and
        logitsum (H, n) of the raw scaled logits, summed over the n_queries recorded queries (all of the
        chunk's, or its probes). The qk ring keeps the mean raw logit of each of the last QK_HISTORY commits;
        past attention is normalised later by attn_count (H2O / ZipCache). colsum None ("logits"): only the
        ring; logitsum None ("none"): nothing but the extension."""
        s = self.stats[layer]
        grow = n_total - len(s["attn_sum"])
        if grow > 0:
            for key in FIELDS:
                s[key] = torch.cat([s[key], torch.zeros(grow)])
            s["qk_hist"] = torch.cat([s["qk_hist"], torch.zeros(grow, QK_HISTORY)])
            for arrays in self.extra.values():
                arrays[layer] = torch.cat([arrays[layer], torch.zeros(grow)])
        if logitsum is None:
            return
        s["qk_hist"][:, chunk % QK_HISTORY] = logitsum.mean(0) / n_queries
        if colsum is None:
            return
        m = colsum.mean(0)  # head mean, (n,)
        s["attn_sum"] += m
        s["attn_max"] = torch.maximum(s["attn_max"], colmax.mean(0))
        s["attn_count"] += n_queries
        s["recent"] = m / n_queries

    def compact(self, layer: int, source: torch.Tensor | None) -> None:
        """Follow the cache's keep: `source` (m,) is the old position of each kept token's new position."""
        if source is None:
            return
        s = self.stats[layer]
        for key in (*FIELDS, "qk_hist"):
            s[key] = s[key].index_select(0, source)
        for arrays in self.extra.values():
            arrays[layer] = arrays[layer].index_select(0, source)

    def quiet(self) -> Observer:
        """This observer for a commit whose statistics nothing reads: the model computes none (fused
        kernel), the arrays only grow."""
        return _Quiet(self)

    def add_extra(self, name: str) -> list[torch.Tensor]:
        """Per-layer arrays (zeros, one per cached token) that grow and compact with the cache."""
        if name not in self.extra:
            self.extra[name] = [torch.zeros(len(s["attn_sum"])) for s in self.stats]
        return self.extra[name]

    def clone(self) -> Observer:
        return Observer(
            self.n_layer,
            self.kind,
            self.probe,
            self.allowed,
            self.owner,
            [{k: v.clone() for k, v in s.items()} for s in self.stats],
            {k: [a.clone() for a in v] for k, v in self.extra.items()},
        )

    # ---------------------------------------------------------------- read by the policy
    def _need(self, kind: str, what: str, check: bool) -> None:
        if check and _level(self.allowed) < _level(kind):
            raise SignalNotRequested(
                f"{self.owner} reads {what}, which needs the {kind!r} attention statistics, "
                f"but it requests {self.allowed!r}: state it in its observed request "
                f"(reads = {kind!r})"
            )

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

    def qk_history(self, layer: int, check: bool = True) -> torch.Tensor:
        """Mean raw logit q.k / sqrt(d) from each of the last QK_HISTORY commits (a ring by chunk): (n, R)."""
        self._need("logits", "raw q.k sums", check)
        return self.stats[layer]["qk_hist"]


def _empty() -> dict[str, torch.Tensor]:
    return {**{k: torch.zeros(0) for k in FIELDS}, "qk_hist": torch.zeros(0, QK_HISTORY)}


class _Quiet:
    """An Observer seen by one commit that computes no statistics."""

    kind, probe = "none", 1.0

    def __init__(self, obs: Observer):
        self._obs = obs

    def commit(self, layer: int, n_total: int, *args, **kwargs) -> None:
        self._obs.commit(layer, n_total)


def observer_for(request: Request, n_layer: int, record: str | None = None, owner: str = "policy") -> Observer:
    """The run's observer: the statistics the policy requests, or more when `record` (a STATS level, the
    explorer's heatmaps) asks for more. Probe queries stand in for every query only where the policy itself
    reads probabilities, so recording more than a policy reads changes none of its inputs."""
    kind = request.kind if record is None or _level(record) < _level(request.kind) else record
    probe = request.probe if request.kind == "probs" else 1.0
    return Observer(n_layer, kind, probe, request.kind, owner)
