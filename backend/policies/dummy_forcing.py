"""`dummy_forcing`: heterogeneous per-head memory (Dummy Forcing, arXiv 2601.20499; training-free).

Confirmed from the paper: about a quarter of the attention heads of Self-Forcing-style models attend almost only
to the current frame ("dummy heads"); heterogeneous memory allocation, dynamic head programming and packed
attention give 24.3 vs 17.5 FPS on Self-Forcing (up to 2.0x at 720P/1080P) with under 0.5% quality drop, and
6.58x longer context at equal cost.
Confirmed from its code (csguoh/DummyForcing, `online_head_classification`, `dynamic_head_programming`): the
heads are programmed once per video at an early clean cache-write pass from each head's attention shares on the
first frame, the middle history and the current chunk; the shares on the first frame and on the middle are each
normalised over all heads of the model, a head's cost is the larger of the two, and the `dummy_share` of heads
with the lowest cost become dummy heads (a fixed count: 180 of 360, a half, in the released configs; a quarter
in the paper's observation, our default); every other head is a *sink* head if its normalised first-frame share
is at least its middle share, else a *neighbor* head. Sink heads keep frame 0, dummy heads the newest past frame,
neighbor heads the newest chunks; every head sees the current chunk. Sink and dummy heads hold equally many
tokens, so they share one attention call (packed attention).
Our reconstruction: the shares are those of the commit passes before the first keep (the probe queries'
attention, `observe.Observer.head_regions`), prompt anchors (our self-attention text) kept by every head; at a
token `budget` the heads together hold the bytes of `budget` tokens held by all heads, so the (token, head)
pairs the sink and dummy heads do not use go to the neighbor heads' window (the paper's longer context at equal
cost); the paper gives no rule for that split. Attention runs one fused call per group of heads holding the same
tokens (`models.attention.packed_attention`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .heads import head_slots, held_tensor, newest_rows, split_slots
from .scorer import Scorer
from .signals import recency

SINK, DUMMY, NEIGHBOR = 0, 1, 2
ROLE_NAMES = ("sink", "dummy", "neighbor")


def program_heads(shares: torch.Tensor, share: float) -> np.ndarray:
    """Dynamic head programming: shares (L, H, 4) over observe.REGIONS (first, middle, previous, own) -> (L, H)
    roles. First-frame and middle (all history but frame 0) shares are normalised over every head of the
    model; the round(share x L x H) heads with the lowest max of the two are dummy heads, the rest sink heads
    (first >= middle) or neighbor heads."""
    first = shares[..., 0].numpy()
    middle = (shares[..., 1] + shares[..., 2]).numpy()
    f = first / max(first.sum(), 1e-12)
    m = middle / max(middle.sum(), 1e-12)
    cost = np.maximum(f, m).reshape(-1)
    roles = np.where(f >= m, SINK, NEIGHBOR).reshape(-1)
    roles[np.argsort(cost, kind="stable")[: round(share * cost.size)]] = DUMMY
    return roles.reshape(first.shape)


@dataclass
class DummyForcing(Scorer):
    name = "dummy_forcing"
    granularities = ("frame",)  # the neighbor heads keep whole frames, newest first
    reads = "probs"  # each head's attention shares, from the commit passes before the first keep
    per_head = True
    head_frames = 1  # sink and dummy heads hold frame 0 or the newest past frame
    dummy_share: float = 0.25  # of all heads made dummy heads

    def __post_init__(self):
        if not 0.0 <= self.dummy_share < 1.0:
            raise ValueError(f"dummy_share must be a share of the heads in [0, 1), got {self.dummy_share!r}")

    def roles(self, n_layer: int, decide: bool = True) -> np.ndarray | None:
        """(L, H) roles, programmed at the first keep over budget (`decide`) from the newest commit's shares of
        every layer and fixed for the run (in the observer's notes); None before."""
        notes = self.observed.notes
        if "head_roles" not in notes and decide:
            shares = [self.observed.head_regions(i) for i in range(n_layer)]
            if any(s is None for s in shares):
                return None
            notes["head_roles"] = program_heads(torch.stack(shares), self.dummy_share)
        return notes.get("head_roles")

    def done_reading(self, observed):
        return "head_roles" in observed.notes  # programmed once: the shares are read no more

    def head_keep(self, layer_idx, layer, ctx, budget):
        H, n = layer.k.shape[0], len(layer)
        n_layer = len(self.observed.stats)
        if budget is None or (n <= budget and self.roles(n_layer, decide=False) is None):
            return torch.ones(H, n, dtype=torch.bool), None
        roles = self.roles(n_layer)
        prot = self.protected(layer, ctx).numpy()
        if roles is None:  # nothing observed yet: every head keeps the newest frames that fit
            return held_tensor([newest_rows(layer, prot, budget, ctx.tokens_per_frame)] * H), recency(layer)
        role = roles[layer_idx]
        fr = layer.meta["frame"].numpy()
        newest_past = fr[~prot].max() if (~prot).any() else -1
        own = {SINK: prot | (fr == 0), DUMMY: prot | (fr == newest_past)}
        fixed = np.array([int(own[r].sum()) if r != NEIGHBOR else -1 for r in role])
        per_head = split_slots(head_slots(budget, H), fixed, role == NEIGHBOR)
        T = ctx.tokens_per_frame
        rows = [own[r] if r != NEIGHBOR else newest_rows(layer, prot, int(c), T) for r, c in zip(role, per_head)]
        return held_tensor(rows), recency(layer)
