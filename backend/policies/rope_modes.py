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

import torch

from ..cache import KIND_FRAME, LayerCache

ROPE_MODES = ("absolute", "shift_sink", "reindex")


def shift_sink(layer: LayerCache, sink_frames: int) -> None:
    """Move the sink (frames < sink_frames) so its last frame's t is one below the first kept tail frame."""
    m = layer.meta
    is_frame = m["kind"] == KIND_FRAME
    sink = is_frame & (m["frame"] < sink_frames)
    tail = is_frame & ~sink
    if not bool(sink.any()) or not bool(tail.any()):
        return
    pos = m["pos"].clone()
    delta = int(pos[tail, 0].min()) - 1 - int(pos[sink, 0].max())
    if delta:
        pos[sink, 0] += delta
        layer.set_positions(pos)


def reindex(layer: LayerCache) -> None:
    """Give the kept frames contiguous temporal positions (in frame order) ending at the newest frame's."""
    m = layer.meta
    is_frame = m["kind"] == KIND_FRAME
    if not bool(is_frame.any()):
        return
    frames = m["frame"][is_frame].unique()                          # ascending
    newest_t = int(m["frame"][is_frame].max()) + 1                  # the newest frame keeps its absolute t
    rank = torch.searchsorted(frames, m["frame"][is_frame])
    pos = m["pos"].clone()
    pos[is_frame, 0] = newest_t - (len(frames) - 1 - rank)
    if not torch.equal(pos, m["pos"]):
        layer.set_positions(pos)
