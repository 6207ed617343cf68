"""Scorer: what one cache policy reads, what it protects and how it scores cached tokens (kvpress's
`ScorerPress`). A scorer is the only part a new policy writes; the selector (`select.Selector`), the wrappers
(`wrappers.py`: layer split, period, RoPE re-alignment) and the cache's storage (`storage.Storage`) are composed
around it by `base.Policy`, and the registry (`policies/__init__.py`) names pre-configured compositions.

A scorer holds settings only. What a run learns (observed attention, PaFu-KV's predictions, timings) lives in
the run's `observe.Observer`, which the stepper builds per run and binds (`bind`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..cache import KIND_PROMPT, LayerCache
from ..observe import Observer


@dataclass
class Scorer:
    """Base scorer: protects the prompt anchors and the newest chunk, scores nothing (a policy with no score
    keeps everything). Subclasses set `name` and override `score` (higher = keep), and where the method needs
    it `protected`, `prepare` (work before the keep, e.g. merging) or `keep` (a selection of its own)."""

    name: ClassVar[str] = "base"
    granularities: ClassVar[tuple[str, ...]] = ("token", "frame")  # what the selector may do with its scores
    reads: ClassVar[str] = "none"  # observed attention `score` reads: none | logits (raw q.k) | probs
    reads_newest: ClassVar[bool] = False  # the score reads only the newest commit's statistics (`recent`), so a
    # commit after which no layer evicts need not record them (`Policy.lazy_stats`)
    per_head: ClassVar[bool] = False  # keeps a set of tokens per head (`head_keep`), not one per layer
    head_frames: ClassVar[int] = 0  # per-head policies: frames beyond the protected tokens that every head holds
    # at least (Dummy Forcing's sink or newest past frame): part of the smallest budget
    observed: Observer | None = field(default=None, init=False, repr=False, compare=False)  # this run's
    # observed attention and per-run arrays (`bind`)

    def bind(self, observer: Observer) -> None:
        """Attach the run's observer (the stepper builds it from the policy's request)."""
        self.observed = observer

    def load_parts(self, models) -> None:
        """Load the learned parts this scorer scores with from a models folder (none by default)."""

    def learned_head(self):
        """The salience head this scorer scores with, if it has one (None by default)."""
        return None

    def signature_files(self) -> list[str]:
        """Weight files the scores depend on beyond the model (benchmark resume keys); none by default."""
        return []

    def sink_frames_at(self, layer: LayerCache, ctx) -> int:
        """Frames pinned at the start of the video (the `shift_sink` RoPE mode moves them next to the tail)."""
        return 0

    def window_tokens(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> int | None:
        """Most tokens per layer the cache holds after a commit when no budget is set (None = unbounded)."""
        return None

    def protected(self, layer: LayerCache, ctx) -> torch.Tensor:
        """Boolean (n,) of tokens never evicted: prompt anchors and the newest chunk. `ctx.budget` is the
        policy's per-layer budget (protection may grow with it: Deep Forcing's sink is half of it)."""
        m = layer.meta  # numpy on views: this runs on every layer, every commit
        return torch.from_numpy((m["kind"].numpy() == KIND_PROMPT) | (m["frame"].numpy() >= ctx.newest_frames[0]))

    def score(self, layer_idx: int, layer: LayerCache, ctx) -> torch.Tensor | None:
        """(n,) higher = keep, in cache order; None = no opinion (keep everything)."""
        return None

    def prepare(self, cache, ctx) -> list[torch.Tensor]:
        """Work before selection (merging, scoring new tokens); returns the token ids removed per layer."""
        return [torch.zeros(0, dtype=torch.long) for _ in cache.layers]

    def keep(self, layer_idx: int, layer: LayerCache, ctx, budget: int | None, selector):
        """-> (cache indices to keep, scores or None) at this layer's `budget` (tokens): the protected tokens
        and the selector's pick of the rest by `score`."""
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        scores = self.score(layer_idx, layer, ctx)
        return selector.keep(scores, self.protected(layer, ctx), layer.meta, budget), scores

    def done_reading(self, observed: Observer) -> bool:
        """Whether the scorer reads no more attention statistics this run, so commits may skip them (the per-head
        policies once their heads are programmed); False by default."""
        return False

    def head_keep(self, layer_idx: int, layer: LayerCache, ctx, budget: int | None):
        """Per-head scorers (`per_head`): -> (held (H, n) bool: which heads keep each token, the prompt anchors
        by every head; scores (n,) or None). `budget` is the mean tokens per head: the heads together hold at
        most budget x H (token, head) pairs, the bytes of `budget` tokens held by every head."""
        raise NotImplementedError(f"{self.name} keeps one set per layer")

    def settings(self) -> dict:
        """The scorer's own settings (its dataclass fields, learned parts and run state excluded)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.repr}
