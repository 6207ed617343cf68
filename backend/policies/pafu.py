"""`pafu`: PaFu-KV, past- and future-informed KV cache policy (arXiv 2601.21896), the headline method.

Confirmed: a lightweight Salience Estimation Head (SEH), distilled from a bidirectional teacher's SSE
salience, predicts which cached tokens future frames will need; the cache keeps those. Reconstruction
(see backend/salience.py for the head and labels): after each commit the head scores the new tokens once
from their un-rotated keys and grid positions (kept in the run's observer, aligned with the cache); beyond the
protected tokens the policy keeps the top tokens by alpha * past + (1 - alpha) * predicted, both min-max
normalised over the layer's tokens, past = normalised accumulated attention (H2O / ZipCache).
Protected, as in methods.md §1 step 4 ("sink chunk + newest chunk + top-C"): the prompt anchors, the first
`sink_frames` frames and the newest `recent_frames` frames (sink 1, recent 1: docs/decisions/, "PaFu-KV
`sink_frames` / `recent_frames`").

Our choices, each fixed on validation prompts, never the held-out set (docs/decisions/README.md has the rule
and the evidence of each):
- alpha = 0, the head alone: past attention is the one input that needs materialised attention at every
  commit, and mixing it in was no better on any score ("PaFu-KV `alpha`"); so PaFu-KV runs on fused kernels.
- recent_share = 0: a recency window of a share of the budget moved no score outside its interval
  ("PaFu-KV `recent_share`").
- Whole frames, not single tokens as in methods.md's reconstruction: kept one by one, the salient tokens of a
  moving sprite survive at many old positions and the student draws them again ("PaFu-KV `granularity`");
  `pafu:granularity=token` is the paper-closer variant.
- Strata: the best-scored frame of each of K equal spans of time is kept first (K = the frames that fit), then
  the rest by score, so the kept history stays spread over the video as a uniform subsample's does and the
  scores pick within each span ("PaFu-KV `granularity`"); `granularity=frame` takes the top frames anywhere.
- One keep every two chunks (the registry's `period=2`, "eviction period"); `period=1` evicts after every chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import KIND_FRAME
from ..loading import MODELS_DIR, load_head
from ..salience import head_file
from .scorer import Scorer
from .signals import past_attention


def minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of x (r, n) (or x (n,)) over the columns in `mask` (n,)."""
    sel = x[..., mask]
    if sel.shape[-1] == 0:
        return torch.zeros_like(x)
    lo, hi = torch.aminmax(sel, dim=-1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


@dataclass
class PaFu(Scorer):
    name = "pafu"
    granularities = ("token", "frame", "strata")
    alpha: float = 0.0  # weight of past attention (0: the head alone, no attention read)
    recent_frames: int = 1
    recent_share: float = 0.0  # share of the budget's frames kept as a recency window
    sink_frames: int = 1
    labels: str = "sse"  # which head: sse (the paper) | hindsight (our variant)
    head: object = field(default=None, repr=False)  # a SalienceHead; None loads the shipped one

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        head_file(self.labels)  # rejects unknown labels
        if not 0.0 <= self.recent_share < 1.0:
            raise ValueError(f"recent_share must be in [0, 1), got {self.recent_share}")
        if self.recent_frames < 1 or self.sink_frames < 0:
            raise ValueError(
                f"recent_frames must be >= 1 and sink_frames >= 0, got {self.recent_frames}, {self.sink_frames}"
            )

    def recent_window(self, tokens_per_frame: int, budget: int | None) -> int:
        """Frames of the protected recency window: `recent_frames`, or `recent_share` of the budget's frames
        if that is more (H2O splits its budget between heavy hitters and recent tokens the same way)."""
        share = int(self.recent_share * (budget // tokens_per_frame)) if budget is not None else 0
        return max(self.recent_frames, share)

    def protected(self, layer, ctx):
        """Prompt anchors, the sink frames and the recency window (which holds the newest chunk). Prompt
        tokens sit at frame -1, so one comparison covers them and the sink: this runs on every layer after
        every commit."""
        first, last = ctx.newest_frames
        recent_from = min(first, last + 1 - self.recent_window(ctx.tokens_per_frame, ctx.budget))
        f = layer.meta["frame"]
        return (f < self.sink_frames) | (f >= recent_from)

    def sink_frames_at(self, layer, ctx):
        return self.sink_frames

    def salience_head(self):
        """The Salience Estimation Head this policy scores with (the shipped one unless `load_parts` or the
        caller gave another; loaded on first use)."""
        if self.head is None:
            self.head = load_head(labels=self.labels)
        return self.head

    def learned_head(self):
        return self.salience_head()

    def load_parts(self, models) -> None:
        """The head distilled for the model in `models` (a training run's folder holds its own; a missing one
        is named with the command that writes it, never replaced by the shipped head of another model)."""
        if self.head is None:
            self.head = load_head(Path(models) / head_file(self.labels), self.labels)

    def signature_files(self) -> list[str]:
        """Weights the policy's results depend on beyond the model (benchmark resume keys)."""
        return [str(MODELS_DIR / head_file(self.labels))]

    def predictions(self, sizes: list[int] | None = None) -> list[torch.Tensor]:
        """The head's prediction for every cached token, per layer (0: not scored yet); the policy's own
        arrays, kept aligned with the cache by its observer."""
        return self.observed.add_extra("pred", sizes or [])

    def prepare(self, cache, ctx):
        """Score the tokens the last commit added. When this run was scored after the previous chunk (the
        observer's note), those are exactly each layer's tail (commits append) and one batched pass scores
        them; otherwise (a first call) every unscored frame token is. The head's time is the run's
        `head_ms`."""
        t0 = time.perf_counter()
        f0, f1 = ctx.newest_frames
        pred = self.predictions(cache.occupancy())
        notes = self.observed.notes
        head = self.salience_head()
        device = cache.layers[0].k.device
        if next(head.parameters()).device != device:  # a generator on a GPU: the head goes where the keys are
            head.to(device)
        if notes.get("pafu_scored") == ctx.chunk - 1:
            head.predict_tail(cache, (f1 - f0 + 1) * ctx.tokens_per_frame, pred)
        else:
            head.predict_cache(cache, pred, only_new=True)
        notes["pafu_scored"] = ctx.chunk
        notes["head_ms"] = notes.get("head_ms", 0.0) + (time.perf_counter() - t0) * 1e3
        return super().prepare(cache, ctx)

    @property
    def reads(self) -> str:
        """Past attention is read only with alpha > 0; alpha = 0 (the head alone) runs on fused attention."""
        return "probs" if self.alpha > 0 else "none"

    def score(self, layer_idx, layer, ctx):
        pred = self.predictions()[layer_idx]
        frame = layer.meta["kind"] == KIND_FRAME
        if self.alpha == 0:
            return minmax(pred, frame)
        both = minmax(torch.stack([past_attention(self.observed, layer_idx), pred]), frame)  # (2, n)
        return self.alpha * both[0] + (1 - self.alpha) * both[1]
