"""`python -m backend.bench sampler`: choose sampler settings on *validation* prompts.

Validation pairs are drawn from the training distribution (``backend.data.sample_train_scene`` with a
fixed seed), never from the held-out evaluation set, so sampler defaults are not tuned on the evaluation.
"""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import SamplerConfig
from ..consistency import evaluate_video

SETTINGS = {
    "4 steps renoise": SamplerConfig(first_steps=None, first_renoise=None),
    "4 steps Euler": SamplerConfig(renoise=False, first_steps=None, first_renoise=None),
    "first 16 Euler, then 4 renoise": SamplerConfig(first_steps=16, first_renoise=False),
    "first 16 Euler, then 4 Euler": SamplerConfig(first_steps=16, first_renoise=False, renoise=False),
    "first 16 Euler + colour guidance 2, then 4 renoise": SamplerConfig(first_guidance=2.0),
    "first 16 Euler + colour guidance 3, then 4 renoise": SamplerConfig(first_guidance=3.0),
    "first 32 Euler, then 8 Euler": SamplerConfig(steps=8, first_steps=32, first_renoise=False, renoise=False),
}


def validation_pairs(n: int = 12) -> list[tuple[str, int]]:
    from ..data import sample_train_scene
    rng = np.random.default_rng(4242)
    return [(spec.text(), seed) for spec, seed in (sample_train_scene(rng) for _ in range(n))]


def _one(job):
    import torch
    from ..loading import shipped
    from ..policies import Full
    from ..stepper import Stepper
    torch.set_num_threads(1)
    name, prompt, seed, frames = job
    st = Stepper(*shipped(), prompt, frames, seed=seed, policy=Full(),
                 sampler=SETTINGS[name], preview=False)
    for _ in st.run():
        pass
    r = evaluate_video(st.frames, prompt)
    r.pop("per_frame_adherence")
    return name, r


def run(n: int = 12, frames: int = 48, workers: int = 2, out: str = "docs/benchmarks") -> dict:
    jobs = [(name, p, s, frames) for name in SETTINGS for p, s in validation_pairs(n)]
    res: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with mp.get_context("spawn").Pool(workers) as pool:
        for name, r in tqdm(pool.imap(_one, jobs), total=len(jobs), desc="sampler settings"):
            res[name].append(r)
    keys = ("adherence", "frames_all_found", "identity_persistence", "background_revisit")
    table = {name: {k: float(np.nanmean([r[k] for r in rs])) for k in keys} for name, rs in res.items()}
    lines = ["# Sampler settings on validation prompts (training distribution, not the held-out set)", "",
             f"{n} prompts x {frames} frames, full cache.", "", "| setting | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |" for name, v in table.items()]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "sampler.md").write_text("\n".join(lines) + "\n")
    (Path(out) / "sampler.json").write_text(json.dumps(table, indent=1))
    print("\n".join(lines))
    return table
