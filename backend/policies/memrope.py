"""`memrope`: evicted frames folded into long- and short-term memory tokens (MemRoPE, arXiv 2603.12513;
training-free).

Confirmed from the paper: memory tokens compress all past keys into a long-term and a short-term stream by
exponential moving averages; keys are cached before RoPE and positions applied at attention time (online RoPE
indexing); a fixed 12-frame cache generates from 30 s to over an hour on Self-Forcing and LongLive.
Confirmed from its code (YoungRaeKimm/MemRoPE, `compression_method="ema"`): the cache is [sink 3 | long memory
1 frame | short memory 1 frame | recent 4 | current chunk 3]; the frames leaving the recent region update both
streams, keys and values, m <- alpha e + (1 - alpha) m with alpha 0.01 (long) and 0.1 (short); by default e is
the mean of every evicted token (one vector per head, broadcast over the slot's cells; `per_position` takes the
mean per grid cell instead, the code's `ema_adaptive` without its motion-adaptive rate); at the first eviction
both streams start at e, overwriting the two frames in their slots; the cached frames get contiguous temporal
positions in slot order, the current chunk last.
Our reconstruction: the memory slots are the token slots of the two frames after the sink (they keep those
frames' token ids and show as them in the explorer); the recent region is what the token budget leaves after the
prompt, the sink and the memory; the contiguous positions are the `reindex` RoPE mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import KIND_FRAME
from .scorer import Scorer
from .signals import grid_cells


@dataclass
class MemRoPE(Scorer):
    name = "memrope"
    granularities = ("frame",)  # sink, memory and recent regions are whole frames
    sink_frames: int = 3
    long_rate: float = 0.01  # EMA rate of the long-term stream
    short_rate: float = 0.1  # EMA rate of the short-term stream
    per_position: bool = False  # the mean of the evicted tokens per grid cell (else one vector per head)

    def __post_init__(self):
        if isinstance(self.sink_frames, bool) or not isinstance(self.sink_frames, int) or self.sink_frames < 0:
            raise ValueError(f"sink_frames must be a whole number >= 0, got {self.sink_frames!r}")
        for name in ("long_rate", "short_rate"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")

    def memory_frames(self) -> tuple[int, int]:
        """The frames whose token slots hold the long and the short stream."""
        return self.sink_frames, self.sink_frames + 1

    def protected(self, layer, ctx):
        fr = layer.meta["frame"]
        return super().protected(layer, ctx) | ((fr >= 0) & (fr < self.sink_frames + 2))

    def sink_frames_at(self, layer, ctx):
        return self.sink_frames

    def keep(self, layer_idx, layer, ctx, budget, selector):
        n = len(layer)
        if budget is None or n <= budget:
            return torch.arange(n), None
        m = layer.meta
        kind, fr = m["kind"].numpy(), m["frame"].numpy()
        T = ctx.tokens_per_frame
        prot = self.protected(layer, ctx).numpy()
        room = ((budget - int(prot.sum())) // T) * T  # recent frames beyond the protected ones
        recent = np.flatnonzero(~prot & (kind == KIND_FRAME))
        by_age = recent[np.lexsort((-m["token_id"].numpy()[recent], -fr[recent]))]  # newest first
        evicted = by_age[room:]
        if len(evicted):
            self._fold(layer_idx, layer, evicted, fr, kind)
        keep = np.ones(n, bool)
        keep[evicted] = False
        return torch.from_numpy(np.flatnonzero(keep)), None

    def _fold(self, layer_idx: int, layer, evicted: np.ndarray, fr, kind) -> None:
        """Update both memory streams with the evicted tokens' mean keys and values (pre-RoPE), both slots in
        one write."""
        started = self.observed.notes.setdefault("memory_started", set())
        slots = [np.flatnonzero((fr == f) & (kind == KIND_FRAME)) for f in self.memory_frames()]
        slot = np.concatenate(slots)
        if len(slot) == 0:
            return
        ev = torch.from_numpy(evicted)
        k, v = layer.k.index_select(1, ev), layer.v.index_select(1, ev)  # (H, e, Dh)
        cells = grid_cells(layer) if self.per_position else None
        k_e, v_e = self._evicted_mean(k, v, cells, evicted, slot)  # (H, m, Dh) each
        rates = (self.long_rate, self.short_rate) if layer_idx in started else (1.0, 1.0)  # the first starts at e
        a, b = ([torch.full((1, len(s), 1), x) for s, x in zip(slots, xs)] for xs in (rates, [1 - r for r in rates]))
        a, b = torch.cat(a, 1), torch.cat(b, 1)  # (1, m, 1) per slot token: its stream's rate, 1 - it
        idx = torch.from_numpy(slot)
        layer.assign(idx, a * k_e + b * layer.k[:, idx], a * v_e + b * layer.v[:, idx])
        started.add(layer_idx)

    def _evicted_mean(self, k: torch.Tensor, v: torch.Tensor, cells, evicted: np.ndarray, slot: np.ndarray):
        """The evicted keys and values k, v (H, e, Dh), as one mean for every slot token (the code's default) or
        per grid cell (`per_position`, `cells` of the layer's tokens; a cell no evicted token has takes the
        overall mean)."""
        k_all, v_all = k.mean(1, keepdim=True), v.mean(1, keepdim=True)
        m = len(slot)
        if not self.per_position:
            return k_all.expand(-1, m, -1), v_all.expand(-1, m, -1)
        ev_cells, slot_cells = cells[evicted], cells[slot]
        out_k, out_v = k_all.repeat(1, m, 1), v_all.repeat(1, m, 1)
        for j, c in enumerate(slot_cells):
            hit = torch.from_numpy(np.flatnonzero(ev_cells == c))
            if len(hit):
                out_k[:, j] = k.index_select(1, hit).mean(1)
                out_v[:, j] = v.index_select(1, hit).mean(1)
        return out_k, out_v
