"""StepRecord: the immutable, numpy-only contract between the backend and everything else
(explorer, sessions, benchmark, CLI). One record per observable step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHASES = ("prefill", "denoise", "commit", "evict")


def _frozen(a, dtype=None, copy: bool = True):
    """A read-only array of a (copied unless `copy` is False and a is already an array of that dtype: the
    eviction's arrays are the record's own, copied once by the policy)."""
    if a is None:
        return None
    a = np.array(a, dtype=dtype, copy=copy or None)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class StepRecord:
    index: int  # running step counter of the run
    phase: str  # prefill | denoise | commit | evict
    chunk: int  # chunk index (-1 for prefill)
    step: int  # denoise step within the chunk (-1 otherwise)
    t: float | None  # noise level of the step (commit: context noise)
    frames: tuple[int, int]  # [first, end) frame indices of the chunk
    preview: np.ndarray | None  # uint8 (F, S, S, 3): x0 estimate (denoise) or final frames (commit)
    occupancy: np.ndarray  # (L,) tokens per layer after the step
    nbytes: np.ndarray  # (L,) KV bytes per layer after the step
    kept: tuple[np.ndarray, ...] | None  # evict: token ids kept, per layer
    evicted: tuple[np.ndarray, ...] | None  # evict: token ids evicted, per layer
    scores: tuple[np.ndarray | None, ...] | None  # evict: policy score of each token before eviction
    ms: float  # wall time of the step
    # commit: time materialising attention for the policy's statistics, beyond the fused attention the same
    # chunk's denoise passes took (0: not computed)
    stats_ms: float = 0.0
    # commit: token ids cached after it, per layer (cache order); evict: the ids `scores` belong to (the cache
    # before the eviction)
    ids: tuple[np.ndarray, ...] | None = None
    # commit: the signals the stepper was asked to record (`Stepper.signals`), per layer, aligned with `ids`
    signals: dict[str, tuple[np.ndarray, ...]] | None = None
    # the run's last record: "frame_ms" (n_frames,), the wall time of all steps of each frame's chunk, and the
    # policy's own timings (e.g. "head_ms", PaFu-KV's salience head)
    timings: dict[str, np.ndarray] | None = None
    # commit: the chunk's clean latents (nf, C, h, w) float32 (what the frames decode from)
    latents: np.ndarray | None = None
    # (L, H) tokens each head holds after the step, when a per-head policy's heads hold different tokens
    heads: np.ndarray | None = None

    @classmethod
    def make(
        cls,
        *,
        index,
        phase,
        chunk,
        step,
        t,
        frames,
        preview,
        occupancy,
        nbytes,
        eviction,
        ms,
        stats_ms=0.0,
        ids=None,
        signals=None,
        timings=None,
        latents=None,
        heads=None,
    ):
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        kept = evicted = scores = None
        if eviction is not None:
            kept = tuple(_frozen(e.kept, np.int64, copy=False) for e in eviction)
            evicted = tuple(_frozen(e.evicted, np.int64, copy=False) for e in eviction)
            scores = tuple(_frozen(e.scores, np.float32, copy=False) for e in eviction)
            if ids is None:
                ids = tuple(_frozen(e.scored, np.int64, copy=False) for e in eviction)
        elif ids is not None:
            ids = tuple(_frozen(i, np.int64) for i in ids)
        signals = None if not signals else {k: tuple(_frozen(x, np.float32) for x in v) for k, v in signals.items()}
        timings = None if timings is None else {k: _frozen(v, np.float64) for k, v in timings.items()}
        return cls(
            int(index),
            phase,
            int(chunk),
            int(step),
            None if t is None else float(t),
            (int(frames[0]), int(frames[1])),
            _frozen(preview, np.uint8),
            _frozen(occupancy, np.int64),
            _frozen(nbytes, np.int64),
            kept,
            evicted,
            scores,
            float(ms),
            float(stats_ms),
            ids,
            signals,
            timings,
            _frozen(latents, np.float32),
            _frozen(heads, np.int64),
        )
