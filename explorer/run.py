"""One explorer run: a validated configuration, the backend Stepper that drives it, and its RunHistory.

A `Run` is live (it has a stepper) or replayed from a saved session (frames and history only); everything
the UI draws reads `RunData`, so both render the same way without recomputing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from backend.build import build_policy
from backend.config import SamplerConfig
from backend.kinds import model_kind
from backend.policies import POLICIES
from backend.settings import parse_params
from backend.stepper import GenerationError, Stepper, validate_frames

from .history import RunHistory
from .record_log import RecordLog
from .signals import teacher_window

MAX_FRAMES = 1024  # the explorer's limit per run (the backend's own is far higher)
MAX_GUIDANCE = 10.0


@dataclass(frozen=True)
class RunConfig:
    prompt: str
    seed: int = 0
    frames: int = 32
    policy: str = "window"
    budget: str = ""  # "" = the policy's own default
    params: str = ""  # "key=value, ..." policy parameters
    guidance: float | None = None  # colour guidance scale on every chunk (1 = off); None = the shipped sampler's
    model: str = "world"  # the kind of generator (backend.kinds): its prompts, sampling and evaluator

    @property
    def label(self) -> str:
        b = f" @ {self.budget}" if self.budget else ""
        p = f" ({self.params})" if self.params else ""
        return f"{self.policy}{b}{p}"

    @property
    def world(self) -> bool:
        """Whether the procedural world's evaluator (object tracks, adherence) applies to this run."""
        return model_kind(self.model).world

    def sampler(self) -> SamplerConfig:
        """The sampler of this run: its generator's own, with the guidance scale set here if any."""
        base = model_kind(self.model).sampler()
        if self.guidance is None:
            return SamplerConfig(**base)
        return SamplerConfig(**(base | dict(guidance=self.guidance, first_guidance=self.guidance)))

    def validate(self, max_frames: int = MAX_FRAMES) -> RunConfig:
        """Check everything that can be checked without a model; raises ValueError with a clear message."""
        kind = model_kind(self.model)
        kind.check_prompt(self.prompt)
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed < 2**31:
            raise GenerationError(f"seed must be an integer in [0, 2^31), got {self.seed!r}")
        validate_frames(self.frames)
        if self.frames > max_frames:
            raise GenerationError(
                f"{self.frames} frames is above the explorer's limit of {max_frames}; "
                "use the CLI (python -m backend generate) for longer videos"
            )
        if self.policy not in POLICIES:
            raise GenerationError(f"unknown policy {self.policy!r}; known: {', '.join(sorted(POLICIES))}")
        parse_params(self.params)
        g = self.guidance
        if g is not None and not kind.guidance:
            raise GenerationError(f"colour guidance applies to the procedural world's model, not to {kind.name}")
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= MAX_GUIDANCE):
            raise GenerationError(f"colour guidance must be a number from 0 to {MAX_GUIDANCE:g} (1 = off), got {g!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def cli(self, model_args: tuple[str, ...] = ()) -> str:
        """The command line that generates this run with `python -m backend generate` (same noise, same frames);
        `model_args`: the arguments that load weights other than the shipped ones."""
        import shlex

        parts = [
            "python -m backend generate",
            f"--prompt {shlex.quote(self.prompt)}",
            f"--frames {self.frames}",
            f"--seed {self.seed}",
            f"--policy {self.policy}",
        ]
        if self.budget:
            parts.append(f"--budget {shlex.quote(self.budget)}")
        parts += [f"--policy-arg {shlex.quote(f'{k}={v}')}" for k, v in parse_params(self.params).items()]
        if self.guidance is not None:
            parts += [f"--sampler guidance={self.guidance:g}", f"--sampler first_guidance={self.guidance:g}"]
        parts += [shlex.quote(a) for a in model_args]
        return " ".join(parts + [f"--out {self.policy}-seed{self.seed}.mp4"])


@dataclass
class RunData:
    """What is drawn and saved: config, frames generated so far, history, model facts. Frames, per-frame times,
    latents and the history are a fold over the run's StepRecords (`add_record`), live or replayed from a
    session's record log; nothing here aliases a stepper."""

    config: RunConfig
    frames: np.ndarray  # (n_frames, S, S, 3) uint8; rows past frames_done are zero
    history: RunHistory
    frame_ms: np.ndarray  # (n_frames,) ms per frame (all steps of its chunk)
    latents: np.ndarray | None = None  # (n_frames, C, g, g) float32, for teacher salience
    preview: np.ndarray | None = None  # (S, S, 3) newest denoise x0 preview
    status: str = ""
    notice: str = ""  # a one-off note for the status (e.g. an unsaved run was replaced)
    oracle: tuple | None = None  # (frames, hindsight scores per layer) of a full-cache reference run
    log: RecordLog | None = None  # the records as a session persists them (bounded as the history is)

    @classmethod
    def empty(cls, config: RunConfig, history: RunHistory, frame_shape: tuple, latent_shape: tuple) -> RunData:
        """A run with nothing generated yet: frames (H, W, 3) and latents (C, h, w) per frame, zero."""
        n = config.frames
        log = RecordLog(history.n_prompt, history.tokens_per_frame, history.chunk_frames)
        return cls(
            config,
            np.zeros((n, *frame_shape), np.uint8),
            history,
            np.zeros(n),
            np.zeros((n, *latent_shape), np.float32),
            log=log,
        )

    def add_record(self, rec, thinned: bool = False) -> None:
        """Fold one record in: the history, the chunk's time shared over its frames (as the stepper counts it),
        a commit's frames and latents, the newest denoise preview; then the log keeps it."""
        self.history.add_record(rec, thinned)
        f0, f1 = rec.frames
        if rec.chunk >= 0:
            self.frame_ms[f0:f1] += rec.ms / (f1 - f0)
        if rec.phase == "commit":
            self.frames[f0:f1] = rec.preview
            if rec.latents is not None:
                self.latents[f0:f1] = rec.latents
        if rec.phase in ("denoise", "commit") and rec.preview is not None:
            self.preview = rec.preview[0]
        if self.log is not None:
            self.log.add(rec, {s.chunk for s in self.history.snapshots}, thinned)

    @property
    def frames_done(self) -> int:
        return self.history.frames_done

    def done_frames(self) -> np.ndarray:
        return self.frames[: self.frames_done]


@dataclass
class Run:
    data: RunData
    stepper: Stepper | None = None
    head: object = None  # SalienceHead for the `predicted` signal
    pause_requested: bool = False  # set by Stop (any thread), read between frames by the stream

    @classmethod
    def start(cls, config: RunConfig, model, ae, head=None, progress=None, models: Path | None = None) -> Run:
        """A run at its first step. `models`: the folder whose salience heads PaFu-KV scores with (None: the
        shipped ones), so a student from a training run is scored by the heads distilled for it."""
        config.validate()
        params = parse_params(config.params)
        policy = build_policy(
            config.policy,
            config.budget or None,
            config.frames,
            model,
            ae,
            config.prompt,
            config.seed,
            params,
            progress,
            sampler=config.sampler(),
            models=models,
        )
        head = policy.learned_head() or head  # PaFu-KV: show the head the policy itself uses
        # attention statistics for every policy: the `attention` heatmap paints them for all (so the explorer's
        # timings include materialising attention; `python -m backend.bench policies` measures without it)
        st = Stepper(
            model,
            ae,
            config.prompt,
            config.frames,
            seed=config.seed,
            policy=policy,
            sampler=config.sampler(),
            attention=True,
            signal_head=head,
            signals=("attention", "predicted") if head is not None else ("attention",),
        )
        geo = model.geometry
        hist = RunHistory(
            geo.n_layer,
            geo.n_prompt,
            geo.tokens_per_frame,
            geo.grid[0],
            geo.chunk_frames,
            config.frames,
            budget=policy.budget if policy.budget is not None else -1,
            cols=geo.grid[1],
        )
        data = RunData.empty(config, hist, st.frames.shape[1:], tuple(st.latents.shape[1:]))
        return cls(data, st, head)

    @property
    def finished(self) -> bool:
        """Nothing more to generate: the last frame is done, the run was aborted, or it is a replayed session.
        A paused run (Stop) is not finished: Run, Step and Step frame continue it."""
        return self.stepper is None or self.stepper.done or self.stepper.cancelled

    @property
    def paused(self) -> bool:
        return self.pause_requested and not self.finished

    @property
    def frames_done(self) -> int:
        return self.data.frames_done

    @property
    def n_frames(self) -> int:
        return self.data.config.frames

    def step(self):
        """Advance one backend step (a denoise step, a commit or an eviction); returns its StepRecord."""
        if self.finished:
            raise GenerationError("this run is finished; reset or start a new one")
        rec = self.stepper.step()
        self.data.add_record(rec)
        self.data.status = describe(rec, self.data)
        return rec

    def step_frame(self):
        """Advance to the end of the current chunk (through its eviction); returns the last record."""
        rec = self.step()
        while rec.phase != "evict" and not self.finished:
            rec = self.step()
        return rec

    def stop(self) -> None:
        """Pause between frames (Stop): the stepper and its cache stay, so the run can continue."""
        self.pause_requested = True

    def abort(self) -> None:
        """End the run for good (its workspace is dropped)."""
        if self.stepper is not None:
            self.stepper.cancel()

    def teacher_everywhere(self, teacher, condition, window: int) -> None:
        """The teacher signal over every generated frame, in windows of `window` frames (attention is quadratic
        in the frames); kept while it covers them all. `condition`: the prompt as the teacher takes it."""
        h, n = self.data.history, self.data.frames_done
        have = h.static.get("teacher")
        if have is not None and np.isfinite(have[:, : n * h.tokens_per_frame]).all():
            return
        merged = None
        for first in range(0, n, window):
            self.teacher_salience(teacher, condition, 0, first=first, end=min(first + window, n))
            cur = h.static["teacher"]
            merged = cur if merged is None else np.where(np.isfinite(cur), cur, merged)
        h.static["teacher"] = merged

    def teacher_salience(
        self, teacher, condition, frame: int, window: int = 48, first: int | None = None, end: int | None = None
    ) -> tuple[int, int]:
        """Compute the teacher signal over a window of generated frames ending just after `frame` (or over
        [first, end) when given); `condition` is the prompt as the teacher takes it (`model.condition`)."""
        import torch

        d = self.data
        n = d.frames_done
        if n == 0:
            raise GenerationError("generate some frames first")
        if end is None:
            end = min(n, max(frame + 1 + window // 6, min(window, n)))
        if first is None:
            first = max(0, end - window)
        h = d.history
        t0 = time.perf_counter()
        d.history.static["teacher"] = teacher_window(
            teacher, condition, torch.from_numpy(d.latents), h.n_layer, first, end, h.n_frames, h.tokens_per_frame
        )
        d.status = f"teacher salience over frames {first}-{end - 1} in {time.perf_counter() - t0:.1f} s"
        return first, end


def describe(rec, data: RunData) -> str:
    """One status line for a step."""
    occ = int(rec.occupancy.max()) if len(rec.occupancy) else 0
    what = {
        "prefill": "stored the prompt anchors",
        "commit": "committed the clean chunk"
        + (f" (attention statistics {rec.stats_ms:.0f} ms of it)" if rec.stats_ms > 0.5 else ""),
        "evict": f"evicted {sum(len(e) for e in rec.evicted) if rec.evicted else 0} tokens (all layers)",
        "denoise": f"denoise step {rec.step + 1} at t={rec.t:.2f}" if rec.t is not None else "denoise",
    }[rec.phase]
    frames = (
        f"frame {rec.frames[0]}"
        if rec.frames[1] - rec.frames[0] <= 1
        else f"frames {rec.frames[0]}-{rec.frames[1] - 1}"
    )
    return (
        f"step {rec.index} · {frames} · {what} · {rec.ms:.0f} ms · cache {occ} tokens/layer, "
        f"{rec.nbytes.sum() / 1e6:.2f} MB · {data.frames_done}/{data.config.frames} frames done"
    )
