"""`pafu`: PaFu-KV, past- and future-informed KV cache policy (arXiv 2601.21896) - the headline method.

Confirmed: a lightweight Salience Estimation Head (SEH), distilled from a bidirectional teacher's SSE
salience, predicts which cached tokens future frames will need; the cache keeps those. Reconstruction
(see backend/salience.py for the head and labels): after each commit the head scores the new tokens once
from their un-rotated keys and grid positions (stored in the cache's `pred` field); beyond the protected
tokens the policy keeps the top tokens by alpha * past + (1 - alpha) * predicted, both min-max
normalised over the layer's tokens, past = normalised accumulated attention (H2O / ZipCache).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..cache import KIND_FRAME
from .base import Policy
from .signals import past_attention


def minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not bool(mask.any()):
        return torch.zeros_like(x)
    lo, hi = x[mask].min(), x[mask].max()
    return (x - lo) / (hi - lo).clamp_min(1e-12)


@dataclass
class PaFu(Policy):
    name = "pafu"
    alpha: float = 0.5
    head: object = field(default=None, repr=False)      # a SalienceHead; None loads the shipped one
    head_ms: float = 0.0                                # time spent in the head (overhead reporting)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def _head(self):
        if self.head is None:
            from ..train.salience import load_head
            self.head = load_head()
        return self.head

    def prepare(self, cache, ctx):
        t0 = time.perf_counter()
        self._head().predict_cache(cache, only_new=True)
        self.head_ms += (time.perf_counter() - t0) * 1e3
        return super().prepare(cache, ctx)

    def score(self, layer_idx, layer, ctx):
        m = layer.meta
        frames = m["kind"] == KIND_FRAME
        return self.alpha * minmax(past_attention(layer), frames) + (1 - self.alpha) * minmax(m["pred"], frames)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha}
