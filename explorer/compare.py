"""Compare: 2-6 configurations (policy x budget) on one prompt and seed, run in lockstep, against the
full-cache reference run with the same noise (added automatically when not among them)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.consistency import evaluate_video
from backend.metrics import psnr_per_frame, ssim_per_frame
from backend.sink_collapse import sink_collapse

from .run import Run, RunConfig, RunData

MAX_CONFIGS = 6
SWEEP_MAX = 12  # a budget sweep: up to 3 policies x the 4 shares
# The metrics table's columns (Comparison.metrics' keys, in order) and their widths in the app, so that no
# header breaks mid-word on a laptop screen.
METRIC_WIDTHS = {
    "config": "12%",
    "frames": "5%",
    "PSNR vs full (dB)": "9%",
    "SSIM vs full": "8%",
    "adherence": "9%",
    "identity": "8%",
    "landmark revisit": "9%",
    "drift": "7%",
    "extra objects / frame": "9%",
    "sink collapses": "7%",
    "median ms/frame": "9%",
    "peak KV MB": "8%",
}
WORLD_METRICS = ("adherence", "identity", "landmark revisit", "drift", "extra objects / frame")


def metric_widths(world: bool) -> list[str]:
    """The table's column widths for runs of the procedural world (with its evaluator's columns) or not."""
    return [w for k, w in METRIC_WIDTHS.items() if world or k not in WORLD_METRICS]


def reference_config(base: RunConfig) -> RunConfig:
    return replace(base, policy="full", budget="", params="")


@dataclass
class Comparison:
    runs: list[Run]
    reference: int = 0  # index of the full-cache run
    metrics_cache: dict = field(default_factory=dict)
    requested: list = field(default_factory=list)  # the configurations asked for (the reference may be added)

    @classmethod
    def start(
        cls,
        configs: list[RunConfig],
        model,
        ae,
        head=None,
        progress=None,
        models: Path | None = None,
        limit: int = MAX_CONFIGS,
    ) -> Comparison:
        if not 1 <= len(configs) <= limit:
            raise ValueError(
                f"compare takes 1 to {limit} configurations besides the full-cache reference, got {len(configs)}"
            )
        base = configs[0]
        for c in configs:
            if (c.prompt, c.seed, c.frames, c.guidance) != (base.prompt, base.seed, base.frames, base.guidance):
                raise ValueError("all compared configurations share one prompt, seed, length and guidance")
        configs = [c.validate() for c in configs]
        requested = list(configs)
        ref = next((i for i, c in enumerate(configs) if c.policy == "full"), None)
        if ref is None:
            configs = [reference_config(base)] + configs
            ref = 0
        runs = [Run.start(c, model, ae, head, progress, models) for c in configs]
        return cls(runs, ref, requested=requested)

    @property
    def datas(self) -> list[RunData]:
        return [r.data for r in self.runs]

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.runs)

    def step_frame(self) -> None:
        """Every run advances by one chunk (lockstep)."""
        for r in self.runs:
            if not r.finished:
                r.step_frame()
        self.metrics_cache.clear()

    def stop(self) -> None:
        for r in self.runs:
            r.stop()

    def abort(self) -> None:
        for r in self.runs:
            r.abort()

    @property
    def pause_requested(self) -> bool:
        return any(r.pause_requested for r in self.runs)

    @pause_requested.setter
    def pause_requested(self, value: bool) -> None:
        for r in self.runs:
            r.pause_requested = value

    @property
    def frames_done(self) -> int:
        return min(d.frames_done for d in self.datas)

    @property
    def n_frames(self) -> int:
        return self.runs[0].n_frames

    def psnr_curves(self) -> dict[str, np.ndarray]:
        n = self.frames_done
        ref = self.datas[self.reference].frames[:n]
        return {
            d.config.label: psnr_per_frame(d.frames[:n], ref) for i, d in enumerate(self.datas) if i != self.reference
        }

    def sink_curves(self) -> dict[str, dict]:
        """Per configuration (the reference too): its distance to its sink frames and the frames where a
        sink-collapse event starts (`backend.sink_collapse`), over the frames done."""
        n = self.frames_done
        return {d.config.label: sink_collapse(d.frames[:n]) for d in self.datas}

    def sweep_points(self) -> dict[str, list[tuple[float, float, float]]]:
        """Per policy with 2+ budgets: (budget as % of the full cache at this length, mean PSNR vs full in dB,
        adherence) per budget, by budget."""
        rows = {r["config"]: r for r in self.metrics()}
        out: dict[str, list] = {}
        for i, d in enumerate(self.datas):
            h = d.history
            if i == self.reference or h.budget <= 0:
                continue
            r = rows[d.config.label]
            out.setdefault(d.config.policy, []).append(
                (100.0 * h.budget / h.n_tokens, r["PSNR vs full (dB)"], r.get("adherence", float("nan")))
            )
        return {p: sorted(v) for p, v in out.items() if len(v) >= 2}

    def reference_warning(self) -> str:
        """A warning when the full-cache reference itself loses a prompted object (found in under half of the
        frames where it should be visible): PSNR against it then rewards copying a wrong video."""
        n = self.frames_done
        key = ("ref", n)
        if key not in self.metrics_cache:
            from backend.consistency import lost_objects, object_tracks

            ref = self.datas[self.reference]
            lost = lost_objects(object_tracks(ref.frames[:n], ref.config.prompt)) if n and ref.config.world else []
            self.metrics_cache[key] = (
                (
                    "⚠ **The full-cache reference itself loses "
                    + ", ".join(
                        f"the {t['label']} (found in {t['found_share']:.0%} of the frames where it should be visible)"
                        for t in lost
                    )
                    + "**: PSNR/SSIM against it then reward copying a wrong video; read adherence "
                    "instead."
                )
                if lost
                else ""
            )
        return self.metrics_cache[key]

    def metrics(self) -> list[dict]:
        """One row per configuration: fidelity against the reference, world consistency, speed, memory."""
        n = self.frames_done
        if n in self.metrics_cache:
            return self.metrics_cache[n]
        ref = self.datas[self.reference].frames[:n]
        rows = [run_metrics(d, None if i == self.reference else ref, n) for i, d in enumerate(self.datas)]
        self.metrics_cache[n] = rows
        return rows


def run_metrics(d: RunData, ref: np.ndarray | None, n: int) -> dict:
    """One metrics row for the first `n` frames of a run: fidelity against the reference frames `ref` (None:
    it is the reference, or there is none), world consistency (the procedural world's runs only: other
    generators have no ground-truth evaluator), speed, memory."""
    frames = d.frames[:n]
    ev = evaluate_video(frames, d.config.prompt) if n and d.config.world else {}
    ps = psnr_per_frame(frames, ref[:n]) if n and ref is not None else np.array([100.0])
    ss = ssim_per_frame(frames, ref[:n]) if n and ref is not None else np.array([1.0])
    # frames generated before the first eviction are identical to the reference (same noise, same cache):
    # average fidelity from the first frame that differs, not over the identical prefix
    k = int(np.argmax(ps < 100.0)) if (ps < 100.0).any() else 0
    ps, ss = ps[k:], ss[k:]
    h = d.history.arrays()
    keys = ("adherence", "identity_persistence", "landmark_revisit", "drift", "extra_objects")
    world = {col: ev.get(k, float("nan")) for col, k in zip(WORLD_METRICS, keys)}
    return {
        "config": d.config.label,
        "frames": n,
        "PSNR vs full (dB)": float(np.mean(ps)) if len(ps) else float("nan"),
        "SSIM vs full": float(np.mean(ss)) if len(ss) else float("nan"),
        **(world if d.config.world else {}),
        "sink collapses": int(len(sink_collapse(frames)["events"])),
        "median ms/frame": float(np.median(d.frame_ms[:n])) if n else float("nan"),
        "peak KV MB": float(h["nbytes"].sum(1).max() / 1e6) if len(h["nbytes"]) else 0.0,
    }
