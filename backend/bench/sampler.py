"""`python -m backend.bench sampler`: choose sampler settings on *validation* prompts.

Validation pairs are drawn from the training distribution (``backend.data.sample_train_scene`` with a
fixed seed), never from the held-out evaluation set, so sampler defaults are not tuned on the evaluation.
Settings are the sweep that chose the shipped defaults (`SETTINGS`) unless given on the command line as
``--setting "LABEL: KEY=VALUE KEY=VALUE"`` (fields of `SamplerConfig`; unnamed fields keep the shipped value).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import SamplerConfig

SETTINGS = {
    "first 16 Euler, then 4 renoise": SamplerConfig(first_guidance=1.0, guidance=1.0),
    "+ colour guidance 3 on the first chunk": SamplerConfig(first_guidance=3.0, guidance=1.0),
    "+ colour guidance 2 on every chunk": SamplerConfig(first_guidance=2.0, guidance=2.0),
    "+ colour guidance 3 on every chunk": SamplerConfig(first_guidance=3.0, guidance=3.0),
    "+ colour guidance 4 on every chunk": SamplerConfig(first_guidance=4.0, guidance=4.0),
    "+ colour guidance 5 on every chunk": SamplerConfig(first_guidance=5.0, guidance=5.0),
}


def parse_setting(text: str) -> tuple[str, SamplerConfig]:
    """'LABEL: KEY=VALUE KEY=VALUE' -> (label, SamplerConfig); a clear error for anything else."""
    from ..flow import sampler_config
    label, sep, rest = text.partition(":")
    if not sep or not label.strip():
        raise ValueError(f"--setting expects 'LABEL: KEY=VALUE ...', got {text!r}")
    return label.strip(), sampler_config(rest.split())


def validation_pairs(n: int = 12) -> list[tuple[str, int]]:
    from ..data import sample_train_scene
    rng = np.random.default_rng(4242)
    return [(spec.text(), seed) for spec, seed in (sample_train_scene(rng) for _ in range(n))]


def _one(job) -> tuple[str, dict]:
    from .model import validation_scores
    name, sampler, prompt, seed, frames = job
    return name, validation_scores(prompt, seed, frames, sampler=sampler)


def run(n: int = 24, frames: int = 96, workers: int = 2, out: str = "docs/benchmarks",
        settings: dict[str, SamplerConfig] | None = None) -> dict:
    from .model import SCORES
    from .report import mean_ci
    settings = settings or SETTINGS
    pairs = validation_pairs(n)
    jobs = [(name, cfg, p, s, frames) for name, cfg in settings.items() for p, s in pairs]
    res: dict[str, list[dict]] = {name: [] for name in settings}
    with mp.get_context("spawn").Pool(workers) as pool:
        for name, r in tqdm(pool.imap(_one, jobs), total=len(jobs), desc="sampler settings"):
            res[name].append(r)
    keys = ("full_2x", "full_all", "window")
    labels = {"full_2x": "full, 0-47", "full_all": f"full, 0-{frames - 1}", "window": f"window 16, 0-{frames - 1}"}
    scores = tuple(s for s in SCORES if s != "drift")                     # drift is reported by the model bench
    table = {name: {k: {s: mean_ci([r[k][s] for r in rs]) for s in scores} for k in keys} | {"ms": mean_ci([r["ms"] for r in rs])}
             for name, rs in res.items()}
    lines = ["# Sampler settings on validation prompts (training distribution, not the held-out set)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}: {n} prompts x {frames} frames with the shipped weights, the same "
             "noise for every setting; mean ± 95% CI over prompts. ms: median per frame (full cache, all denoise "
             "steps + commit + decode, 1 thread, two runs sharing the 2 cores).", "",
             *[f"- {name}: `{_differences(cfg)}`" for name, cfg in settings.items()], "",
             "| setting | run | " + " | ".join(scores) + " | ms |", "|---" * (len(scores) + 3) + "|"]
    for name, v in table.items():
        for k in keys:
            cells = [f"{m:.3f} ± {c:.3f}" for m, c in (v[k][s] for s in scores)]
            ms = f"{v['ms'][0]:.0f}" if k == "full_2x" else ""
            lines.append(f"| {name} | {labels[k]} | " + " | ".join(cells) + f" | {ms} |")
    Path(out).mkdir(parents=True, exist_ok=True)
    table = {name: v | {"sampler": dataclasses.asdict(settings[name])} for name, v in table.items()}
    (Path(out) / "sampler.md").write_text("\n".join(lines) + "\n")
    (Path(out) / "sampler.json").write_text(json.dumps({"pairs": pairs, "frames": frames, "table": table}, indent=1))
    print("\n".join(lines))
    return table


def _differences(cfg: SamplerConfig) -> str:
    """The fields where `cfg` differs from the shipped sampler, as KEY=VALUE (or 'shipped sampler')."""
    base = SamplerConfig()
    diff = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)]
    return " ".join(diff) or "shipped sampler"
