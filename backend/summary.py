"""What a run cost, folded from its StepRecords alone: the benchmark's numbers come from the same stream the
explorer folds into its history and sessions persist, never from a live stepper or policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .records import StepRecord


def layout_bytes(rec: StepRecord) -> int:
    """Bytes the cache's (H, n, Dh) layout holds after a step: the counted bytes, or with a per-head policy each
    layer's bytes per (token, head) times every head's slot of its tokens."""
    if rec.heads is None:
        return int(rec.nbytes.sum())
    held = rec.heads.sum(1)  # (L,) (token, head) pairs
    per_pair = rec.nbytes / np.maximum(held, 1)
    return int(round(float((per_pair * rec.occupancy * rec.heads.shape[1]).sum())))


@dataclass
class RunSummary:
    steps: int = 0
    step_ms: float = 0.0  # wall time of every step
    peak_kv_bytes: int = 0  # most KV bytes over all layers after any step
    peak_tokens: int = 0  # most tokens per layer after any step
    peak_layout_bytes: int = 0  # most bytes the (H, n, Dh) layout holds: with a per-head policy every head's slot
    # of each token any head keeps (the counted bytes are a ragged store's)
    evict_ms: list[float] = field(default_factory=list)  # per eviction step
    stats_ms: list[float] = field(default_factory=list)  # per commit: materialising the policy's attention
    evicted: int = 0  # tokens evicted, summed over layers and steps
    timings: dict[str, np.ndarray] = field(default_factory=dict)  # the last record's (frame_ms, head_ms, ...)

    def add(self, rec: StepRecord) -> RunSummary:
        self.steps += 1
        self.step_ms += rec.ms
        self.peak_kv_bytes = max(self.peak_kv_bytes, int(rec.nbytes.sum()))
        self.peak_tokens = max(self.peak_tokens, int(rec.occupancy.max(initial=0)))
        self.peak_layout_bytes = max(self.peak_layout_bytes, layout_bytes(rec))
        if rec.phase == "evict":
            self.evict_ms.append(rec.ms)
            self.evicted += sum(len(e) for e in rec.evicted or ())
        elif rec.phase == "commit":
            self.stats_ms.append(rec.stats_ms)
        if rec.timings is not None:
            self.timings = dict(rec.timings)
        return self

    @classmethod
    def of(cls, records) -> RunSummary:
        s = cls()
        for rec in records:
            s.add(rec)
        return s

    @property
    def frame_ms(self) -> np.ndarray:
        """Wall time of each frame (its chunk's steps shared over its frames): (n_frames,) ms."""
        return self.timings.get("frame_ms", np.zeros(0))

    @property
    def overhead_ms(self) -> float:
        """Time the policy added: its eviction steps and the attention it had materialised at commits."""
        return float(sum(self.evict_ms) + sum(self.stats_ms))

    def as_dict(self) -> dict:
        """The numbers a result file keeps (means over steps, totals, the per-frame times)."""
        return {
            "peak_kv_bytes": self.peak_kv_bytes,
            "peak_tokens": self.peak_tokens,
            "peak_layout_bytes": self.peak_layout_bytes,
            "evict_ms_mean": float(np.mean(self.evict_ms)) if self.evict_ms else 0.0,
            "stats_ms_mean": float(np.mean(self.stats_ms)) if self.stats_ms else 0.0,
            "evicted_tokens": self.evicted,
            "frame_ms": self.frame_ms.tolist(),
            "head_ms_total": float(self.timings.get("head_ms", 0.0)),
        }
