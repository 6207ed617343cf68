"""Salience signals the explorer can paint over frames, each on one fixed scale shared by all frames and runs.

- score: the policy's own score at its last eviction, as a rank among the cached tokens of that layer
  (0 = the first to be evicted, 1 = the last). A rank, not the raw score, so that policies with scores on
  different scales share one colour bar.
- attention: past attention (accumulated attention / queries that could see the token, H2O / ZipCache),
  times the number of cached tokens, on log2: 0 = the attention a token would get if all were equal. For
  a policy with probe queries (`probe` < 1) only the probes are recorded: the estimate the policy ranks by.
- predicted: the PaFu-KV Salience Estimation Head's prediction from the un-rotated key and position
  (computed for every policy, so a researcher can see what PaFu-KV would keep).
- teacher: the bidirectional teacher's SSE salience (max attention from later, same and earlier chunks,
  DESIGN §6) over the generated latents, computed on demand over a window of frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Signal:
    key: str
    label: str
    unit: str
    vmin: float
    vmax: float
    definition: str


SIGNALS: dict[str, Signal] = {
    s.key: s
    for s in (
        Signal(
            "score",
            "policy score",
            "rank: 0 evicted first",
            0.0,
            1.0,
            "the policy's own score at its last eviction, as a rank among the layer's cached tokens",
        ),
        Signal(
            "attention",
            "past attention",
            "log2 attn / uniform",
            -3.0,
            3.0,
            "mean attention the token received from the queries that could see it (the policy's probe queries, "
            "if it has them), relative to uniform",
        ),
        Signal(
            "predicted",
            "predicted salience",
            "SEH output",
            0.0,
            2.0,
            "PaFu-KV's Salience Estimation Head: how much future frames will need this token",
        ),
        Signal(
            "teacher",
            "teacher salience",
            "SSE label",
            0.0,
            2.5,
            "the bidirectional teacher's max attention to the token from later, same and earlier chunks",
        ),
    )
}


def rank01(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share the mean rank); a single value gets 0.5."""
    n = len(x)
    if n <= 1:
        return np.full(n, 0.5, np.float32)
    order = np.argsort(x, kind="stable")
    r = np.empty(n, np.float64)
    r[order] = np.arange(n)
    # average ranks over ties
    xs = x[order]
    starts = np.r_[0, np.nonzero(np.diff(xs))[0] + 1]
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends):
        if e - s > 1:
            r[order[s:e]] = (s + e - 1) / 2
    return (r / (n - 1)).astype(np.float32)


@torch.no_grad()
def teacher_window(
    teacher,
    prompt_tokens: torch.Tensor,
    latents: torch.Tensor,
    n_layer: int,
    first: int,
    end: int,
    total_frames: int,
    tokens_per_frame: int,
) -> np.ndarray:
    """Teacher SSE over frames [first, end) of the latents: (L, total_frames * T) with NaN outside."""
    from backend.salience import teacher_sse

    out = np.full((n_layer, total_frames * tokens_per_frame), np.nan, np.float32)
    labels = teacher_sse(teacher, prompt_tokens, latents[first:end])
    for layer, lab in enumerate(labels[:n_layer]):
        out[layer, first * tokens_per_frame : end * tokens_per_frame] = lab.numpy()
    return out
