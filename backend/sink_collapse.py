"""Sink collapse: frames that snap back to the attention-sink frames (LoL, arXiv 2601.16914).

Confirmed from the paper's abstract: with sink frames kept in the cache, long videos repeatedly revert to the sink
frame (abrupt scene resets, cyclic motion), which it traces to RoPE periodicity aligning all heads on the sink at
once; its fix is a per-head RoPE jitter. Confirmed only from secondary notes on the paper: it plots each frame's
normalised L2 distance to the sink frames, where a collapse is a sharp drop (to about 0.4), at the same frame
indices across prompts.
Our reconstruction (the feature space and the rule are not published): frames are compared as 16 x 16 RGB
thumbnails (area-averaged, 0-1); a frame's distance to the sink is its L2 distance to the mean of the first
`sink_frames` frames, divided by the mean distance of all later frames (1 = a typical frame); a frame starts a
collapse event when its distance falls to at most `drop` of the median over the `window` frames before it (at
least 4 of them), and the frame before did not. A video whose world returns to its opening look also drops:
compare a policy's events with the full-cache run's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SINK_FRAMES = 3  # LongLive's sink (the `sink` policy's default)
THUMB = 16  # thumbnail side the frames are compared at


@dataclass(frozen=True)
class CollapseConfig:
    sink_frames: int = SINK_FRAMES
    drop: float = 0.5  # a frame at most this share of its recent median distance snaps back
    window: int = 16  # frames before it that set the median


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, THUMB * THUMB * 3) float32 in 0-1, area-averaged."""
    return (
        np.stack([cv2.resize(f, (THUMB, THUMB), interpolation=cv2.INTER_AREA).reshape(-1) for f in frames]).astype(
            np.float32
        )
        / 255.0
    )


def sink_distance(frames: np.ndarray, sink_frames: int = SINK_FRAMES) -> np.ndarray:
    """(N,) each frame's distance to the sink frames' mean, normalised by the mean over the frames after the
    sink (NaN for the sink frames themselves, and for every frame of a video no longer than its sink)."""
    out = np.full(len(frames), np.nan)
    if len(frames) <= sink_frames or sink_frames < 1:
        return out
    x = thumbnails(frames)
    d = np.linalg.norm(x - x[:sink_frames].mean(0), axis=1)
    scale = d[sink_frames:].mean()
    out[sink_frames:] = d[sink_frames:] / max(float(scale), 1e-9)
    return out


def collapse_events(dist: np.ndarray, cfg: CollapseConfig = CollapseConfig()) -> np.ndarray:
    """Frame indices where a collapse event starts (see the module docstring)."""
    flagged = np.zeros(len(dist), bool)
    for t in range(len(dist)):
        before = dist[max(0, t - cfg.window) : t]
        before = before[np.isfinite(before)]
        if np.isfinite(dist[t]) and len(before) >= 4:
            flagged[t] = dist[t] <= cfg.drop * float(np.median(before))
    starts = flagged & ~np.concatenate([[False], flagged[:-1]])
    return np.flatnonzero(starts)


def sink_collapse(frames: np.ndarray, cfg: CollapseConfig = CollapseConfig()) -> dict:
    """{"distance": (N,) normalised distance to the sink, "events": frames starting a collapse}."""
    dist = sink_distance(frames, cfg.sink_frames)
    return {"distance": dist, "events": collapse_events(dist, cfg)}
