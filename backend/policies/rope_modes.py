"""RoPE position modes a policy can declare (keys are cached un-rotated, so a mode only rewrites the
stored temporal positions and the cache re-rotates; rotations compose, so this equals recomputing the
keys with the new positions).

- ``absolute``: positions never change (Self-Forcing, LongLive, PackCache's spatially preserving positions).
- ``shift_sink``: sink frames are moved in time to sit just before the oldest kept non-sink frame
  (Deep Forcing's temporal RoPE adjustment of the deep sink; Rolling Forcing's re-roped sink).
- ``reindex``: kept frames are re-indexed to contiguous temporal positions ending at the newest chunk
  (Infinity-RoPE's window-relative `block_relativistic_rope`; StreamingLLM's in-cache positions).
Spatial (y, x) positions are never touched.
"""

from __future__ import annotations

import numpy as np

from ..cache import KIND_FRAME, LayerCache
from .signals import held_frames

ROPE_MODES = ("absolute", "shift_sink", "reindex")


def shift_sink(layer: LayerCache, sink_frames: int) -> None:
    """Move the sink (frames < sink_frames) so its last frame's t is one below the first kept tail frame.
    Bookkeeping in numpy on views of the metadata (this runs on every layer after every commit)."""
    m = layer.meta
    is_frame = m["kind"].numpy() == KIND_FRAME
    sink = is_frame & (m["frame"].numpy() < sink_frames)
    tail = is_frame & ~sink
    if not sink.any() or not tail.any():
        return
    t = m["pos"].numpy()[:, 0]
    delta = int(t[tail].min()) - 1 - int(t[sink].max())
    if delta:
        pos = m["pos"].clone()
        pos.numpy()[sink, 0] += delta
        layer.set_positions(pos)


def reindex(layer: LayerCache) -> None:
    """Give the kept frames contiguous temporal positions (in frame order) ending at the newest frame's."""
    is_frame, fr, lo, one = held_frames(layer)
    if len(is_frame) == 0:
        return
    present = one >= 0
    rank = (np.cumsum(present) - 1)[fr - lo]  # rank of each token's frame, ascending
    t = (lo + len(one)) - (int(present.sum()) - 1 - rank)  # the newest frame keeps its absolute t
    m = layer.meta
    if not np.array_equal(t, m["pos"].numpy()[is_frame, 0]):
        pos = m["pos"].clone()
        pos.numpy()[is_frame, 0] = t
        layer.set_positions(pos)
