"""`fademem`: a fixed budget of frame entries, older neighbours merged on a power-law schedule (FadeMem, arXiv
2606.10671; training-free variant).

Confirmed from the paper's abstract: new history enters fine-grained, older adjacent entries are merged under a
power-law temporal allocation ("dense near, sparse far"), at a fixed budget; compared with LongLive and Deep
Forcing, better subject and background consistency (no number in the abstract).
Confirmed from its code (aniki-ly/FadeMem, `fademem_memory.py`): an exact window of the newest frames plus a
bank of frame-sized entries, each with a centre (frame index) and a span (frames merged into it); when the bank
overflows, the adjacent pair whose warped ages u = age^beta (beta = 0.3) are closest is merged, the newest gap
protected; a merge weighs keys and values by span^gamma (gamma = 0.5), the centre is the span-weighted mean of
the two, the spans add; frame 0 is an anchor whose keys and values are never averaged (only its span grows).
Our reconstruction: the bank holds what the token budget leaves after the prompt and the window (whole frames);
entries merge cell by cell (a token and the token of the same grid cell in the other frame); a merged entry keeps
the older frame's token slots and takes the centre as its temporal RoPE position (the code re-positions the
bank into a compressed virtual window once it is full; ours keeps absolute centres, as the code does before
that). Spans live in the run's observer beside the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME
from .scorer import Scorer
from .signals import grid_cells, held_frames


@dataclass
class FadeMem(Scorer):
    name = "fademem"
    granularities = ("frame",)  # entries are whole frames
    window: int = 3  # newest frames kept exact (the chunk among them)
    beta: float = 0.3  # age warp of the merge schedule
    gamma: float = 0.5  # merge weight exponent of the span

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a whole number of frames >= 1, got {self.window!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")

    def prepare(self, cache, ctx):
        """The entries' spans (frames merged into each token), kept beside the cache in the observer."""
        self.observed.add_extra("span", cache.occupancy())
        return super().prepare(cache, ctx)

    def keep(self, layer_idx, layer, ctx, budget, selector):
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        span = self.observed.extra["span"][layer_idx]
        span[span == 0] = 1.0  # tokens committed since the last keep: one frame each
        kind, fr = layer.meta["kind"].numpy(), layer.meta["frame"].numpy()
        T = ctx.tokens_per_frame
        _, _, lo, one = held_frames(layer)  # one[f - lo]: a token of frame f (-1: not held)
        frames = np.flatnonzero(one >= 0) + lo  # ascending
        n_frames = (budget - int((kind != KIND_FRAME).sum())) // T  # entries the budget holds
        window = frames[-max(1, min(self.window, len(frames), n_frames)) :]  # a budget below it shortens it
        bank = [int(f) for f in frames if f < window[0]]
        capacity = max(n_frames - len(window), 0)
        first = dict(zip(frames.tolist(), one[frames - lo].tolist()))
        drop: list[int] = []
        cell, pos = grid_cells(layer), layer.meta["pos"].clone()  # merged centres, set once after the merges
        while len(bank) > capacity:
            if capacity < 1 or len(bank) < 3:  # no pair but the protected newest gap: the oldest goes
                drop.append(bank.pop(0) if bank[0] != 0 or len(bank) == 1 else bank.pop(1))
                continue
            i = self._closest_pair(pos, bank, first)
            drop.append(self._merge(layer, bank[i], bank[i + 1], fr, kind, cell, pos, span))
            bank.pop(i + 1)
        layer.set_positions(pos)  # marks the moved centres; the eviction step re-rotates them at once
        gone = np.zeros(n, dtype=bool)
        for f in drop:
            gone |= fr == f
        return torch.from_numpy(np.flatnonzero(~(gone & (kind == KIND_FRAME)))), None

    def _closest_pair(self, pos: torch.Tensor, bank: list[int], first: dict[int, int]) -> int:
        """Index i of the adjacent bank entries (i, i + 1) with the closest warped ages (in temporal positions
        from the newest token's; an entry's centre is its tokens' position), the newest gap excluded."""
        t = pos.numpy()[:, 0]
        ages = np.maximum(float(t.max()) - t[[first[f] for f in bank]], 0.0)
        gaps = np.abs(np.diff(ages**self.beta))[:-1]  # the newest gap is protected
        return int(np.argmin(gaps))

    def _merge(self, layer, older: int, newer: int, fr, kind, cell, pos: torch.Tensor, span: torch.Tensor) -> int:
        """Merge entry `newer` into `older` cell by cell (keys and values weighted by span^gamma, frame 0's kept
        verbatim), the centre (in `pos`, in place) the span-weighted mean, spans added; returns the frame whose
        tokens go."""
        a = np.flatnonzero((fr == older) & (kind == KIND_FRAME))
        b = np.flatnonzero((fr == newer) & (kind == KIND_FRAME))
        _, ja, jb = np.intersect1d(cell[a], cell[b], assume_unique=True, return_indices=True)  # the cells both hold
        if len(ja) == 0:
            return newer
        ia, ib = torch.from_numpy(a[ja]), torch.from_numpy(b[jb])
        sa, sb = span[ia], span[ib]
        if older != 0:  # frame 0 is the anchor: its keys and values stay
            wa, wb = sa**self.gamma, sb**self.gamma
            w = (wa / (wa + wb))[None, :, None]
            k = w * layer.k[:, ia] + (1 - w) * layer.k[:, ib]
            v = w * layer.v[:, ia] + (1 - w) * layer.v[:, ib]
            layer.assign(ia, k, v)
            centre = (sa * pos[ia, 0].float() + sb * pos[ib, 0].float()) / (sa + sb)
            pos[ia, 0] = centre.round().long()
        span[ia] = sa + sb
        return newer
