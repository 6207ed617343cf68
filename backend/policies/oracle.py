"""`oracle`: future-informed upper bound (DESIGN §6), never deployable.

Scores each cached token by the attention it receives over the *whole* video in a full-cache reference
run of the same prompt, seed and noise (hindsight: including queries from frames not generated yet),
normalised by the number of queries that saw it. Token ids (prompt slot, or frame/y/x) are shared across
runs with equal noise, so the reference's per-token totals can be looked up by id. Build the reference
with ``backend.build.reference_scores``; the policy is an upper bound to compare deployable scorers (PaFu-KV's head,
H2O, ...) against. (PaFu-KV's teacher SSE is the other future-informed signal; see the salience module.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .scorer import Scorer


def hindsight_scores(cache, observed) -> list[np.ndarray]:
    """Per layer, a dense array over token ids of each token's attention normalised by the queries that saw
    it, read from a full-cache run's cache and observed attention at its end (the oracle's reference)."""
    out = []
    for i, layer in enumerate(cache.layers):
        m = layer.meta
        dense = np.zeros(int(m["token_id"].max()) + 1, np.float32)
        dense[m["token_id"].numpy()] = observed.past_attention(i, check=False).numpy()
        out.append(dense)
    return out


@dataclass
class Oracle(Scorer):
    name = "oracle"
    reference: list = field(default_factory=list, repr=False)  # from reference_scores(...)

    def score(self, layer_idx, layer, ctx):
        if not self.reference:
            raise ValueError(
                "the oracle policy needs a full-cache reference run: build it with "
                "backend.build.reference_scores(model, ae, prompt, frames, seed)"
            )
        ref = self.reference[layer_idx]
        ids = layer.meta["token_id"].numpy()
        out = np.zeros(len(ids), np.float32)
        ok = ids < len(ref)
        out[ok] = ref[ids[ok]]
        return torch.from_numpy(out)
