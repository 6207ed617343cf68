"""`forcing_kv`: static and dynamic heads (Forcing-KV, arXiv 2605.09681; training-free).

Confirmed from the paper: head roles are stable across samples and denoising steps; static heads (chunk
transitions, intra-frame fidelity) get structured static pruning, dynamic heads (inter-frame motion and
consistency) get pruning by segment-wise similarity; >29 FPS on one H200, -30% cache memory, 1.35x (LongLive) /
1.50x (Self-Forcing) at 480P, 2.82x at 1080P.
Confirmed from its code (zju-jiyicheng/Forcing-KV, `configs_head/head_profile.py`,
`causal_model_forcingkv.py`): a head is static when at least 0.8 of its attention outside the sink falls on the
current chunk and the newest past frame; layer 0 is never split; static heads keep the sink frame 0 and the
newest past frame; dynamic heads keep the same plus segments of older frames, each frame cut into horizontal
bands of tokens, ranked by the cosine similarity of their keys to the same band of the next frame (the least
similar, most changed, kept); every head sees the current chunk. The released code profiles the heads offline
once per model, picks the segments in layer 1 for every deeper layer, and keeps one frame of segments.
Our reconstruction: the roles come from the commit passes before the first keep of each run (the probe
queries' attention, `observe.Observer.head_regions`) rather than an offline profile; each layer picks its own
segments with the rotated keys of its dynamic heads, scored once, when the next frame is committed (kept in the
observer beside the cache); at a token `budget` the heads together hold the bytes of `budget` tokens held by
all heads, so the dynamic heads share what the static ones leave; layer 0 keeps the newest frames that fit.
Prompt anchors (our self-attention text) stay with every head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME
from .heads import head_slots, held_tensor, newest_rows, rank_keep, split_slots
from .scorer import Scorer
from .signals import grid_cells

STATIC, DYNAMIC = 0, 1
ROLE_NAMES = ("static", "dynamic")


def static_heads(shares: torch.Tensor, threshold: float) -> np.ndarray:
    """shares (..., 4) over observe.REGIONS (first, middle, previous, own) -> bool (...): a head is static when
    the newest past frame and its own chunk take at least `threshold` of its attention outside frame 0."""
    near = shares[..., 2] + shares[..., 3]
    return (near / (shares[..., 1:].sum(-1)).clamp_min(1e-12) >= threshold).numpy()


@dataclass
class ForcingKV(Scorer):
    name = "forcing_kv"
    granularities = ("token",)  # dynamic heads keep segments of tokens
    reads = "probs"  # each head's attention shares, from the commit passes before the first keep
    per_head = True
    head_frames = 2  # every head holds frame 0 and the newest past frame
    static_at: float = 0.8  # share of non-sink attention on the newest frames that makes a head static
    segments: int = 4  # horizontal bands a frame is cut into

    def __post_init__(self):
        if not 0.0 <= self.static_at <= 1.0:
            raise ValueError(f"static_at must be a share in [0, 1], got {self.static_at!r}")
        if isinstance(self.segments, bool) or not isinstance(self.segments, int) or self.segments < 1:
            raise ValueError(f"segments must be a whole number >= 1, got {self.segments!r}")

    def roles(self, layer_idx: int, decide: bool = True) -> np.ndarray | None:
        """(H,) roles of a layer, fixed at its first keep over budget (`decide`) from the newest commit's
        shares, kept in the observer's notes for the run; None before."""
        chosen = self.observed.notes.setdefault("head_roles", {})
        if layer_idx not in chosen and decide:
            shares = self.observed.head_regions(layer_idx)
            if shares is None:
                return None
            chosen[layer_idx] = np.where(static_heads(shares, self.static_at), STATIC, DYNAMIC)
        return chosen.get(layer_idx)

    def done_reading(self, observed):
        return len(observed.notes.get("head_roles", {})) >= len(observed.stats) - 1  # fixed in every split layer

    def prepare(self, cache, ctx):
        """Score the newest past frame's segments against the chunk just committed (rotated keys of the dynamic
        heads, or of all heads before the roles are set): 1 - their mean cosine similarity, per token."""
        change = self.observed.add_extra("change", cache.occupancy())
        for i, layer in enumerate(cache.layers):
            self._score_newest_past(i, layer, ctx, change)
        return super().prepare(cache, ctx)

    def _score_newest_past(self, i: int, layer, ctx, change: list[torch.Tensor]) -> None:
        m = layer.meta
        fr, kind, cell = m["frame"].numpy(), m["kind"].numpy(), grid_cells(layer)
        prev_f, new_f = ctx.newest_frames[0] - 1, ctx.newest_frames[0]
        prev = np.flatnonzero((kind == KIND_FRAME) & (fr == prev_f))
        new = np.flatnonzero((kind == KIND_FRAME) & (fr == new_f))
        if len(prev) == 0 or len(new) == 0:
            return
        T = ctx.tokens_per_frame
        cell_prev, cell_new = cell[prev], cell[new]  # raster index within the frame
        at = np.full(T, -1)
        at[cell_new] = new
        pair = at[cell_prev] >= 0
        a, b = prev[pair], at[cell_prev[pair]]
        roles = self.roles(i, decide=False)
        heads = slice(None) if roles is None or not (roles == DYNAMIC).any() else torch.from_numpy(roles == DYNAMIC)
        k = layer.rotated_keys(ctx.rotate) if ctx.rotate is not None else layer.k
        ka = k.index_select(1, torch.from_numpy(a))[heads].transpose(0, 1).reshape(len(a), -1)  # (m, h * Dh)
        kb = k.index_select(1, torch.from_numpy(b))[heads].transpose(0, 1).reshape(len(b), -1)
        cos = torch.nn.functional.cosine_similarity(ka, kb, dim=1).numpy()
        band = cell_prev[pair] * self.segments // T  # contiguous raster segments: horizontal bands
        mean = np.bincount(band, cos, self.segments) / np.maximum(np.bincount(band, minlength=self.segments), 1)
        change[i][torch.from_numpy(a)] = torch.from_numpy(1.0 - mean[band]).float()

    def head_keep(self, layer_idx, layer, ctx, budget):
        H, n = layer.k.shape[0], len(layer)
        prot = self.protected(layer, ctx).numpy()
        if budget is None or (n <= budget and self.roles(layer_idx, decide=False) is None):
            return torch.ones(H, n, dtype=torch.bool), None
        roles = None if layer_idx == 0 else self.roles(layer_idx)
        if roles is None:  # layer 0 (never split) or nothing observed yet: the newest frames that fit
            return held_tensor([newest_rows(layer, prot, budget, ctx.tokens_per_frame)] * H), None
        fr = layer.meta["frame"].numpy()
        newest_past = fr[~prot].max() if (~prot).any() else -1
        base = prot | (fr == 0) | (fr == newest_past)  # sink + newest past frame + chunk + prompt
        n_base = int(base.sum())
        per_head = split_slots(head_slots(budget, H), np.where(roles == STATIC, n_base, -1), roles == DYNAMIC)
        change = self.observed.extra["change"][layer_idx]
        order = np.lexsort((-layer.meta["token_id"].numpy(), -change.numpy()))  # most changed, newest on ties
        rows = [base if r == STATIC else rank_keep(order, base, int(c) - n_base) for r, c in zip(roles, per_head)]
        return held_tensor(rows), change.clone()
