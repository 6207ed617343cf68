"""`python -m backend.bench weights A.safetensors B.safetensors ...`: compare student weights on validation
prompts, to decide which weights ship.

Validation pairs come from the training distribution (``backend.bench.sampler.validation_pairs``), never
from the held-out evaluation set, so choosing weights here does not tune on the evaluation. Each candidate
generates the same pairs with the same noise: full cache to `frames` (scored on frames 0-47, twice the
training clip, and on all of them) and the `window` policy (16 frames). Writes
docs/benchmarks/weights_validation.{md,json}.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

from tqdm import tqdm

from ..config import SamplerConfig
from ..consistency import EVALUATOR_VERSION
from ..loading import file_hash
from .model import SCORES, validation_scores
from .report import mean_ci
from .sampler import validation_pairs


def _one(job) -> tuple[str, dict]:
    path, prompt, seed, frames = job
    return path, validation_scores(prompt, seed, frames, weights=path)


def run(paths: list[str], n: int = 24, frames: int = 96, workers: int = 2, out: str = "docs/benchmarks") -> dict:
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no weights file {p}")
    pairs = validation_pairs(n)
    jobs = [(p, prompt, seed, frames) for p in paths for prompt, seed in pairs]
    res: dict[str, list[dict]] = {p: [] for p in paths}
    with mp.get_context("spawn").Pool(workers) as pool:
        for path, r in tqdm(pool.imap(_one, jobs), total=len(jobs), desc="validation pairs"):
            res[path].append(r)
    table = {p: {key: {s: mean_ci([r[key][s] for r in rs]) for s in SCORES} for key in ("full_2x", "full_all", "window")}
             for p, rs in res.items()}
    sha = {p: file_hash(p) for p in paths}
    names = {"full_2x": "full, 0-47", "full_all": f"full, 0-{frames - 1}", "window": f"window 16, 0-{frames - 1}"}
    lines = ["# Student weights on validation prompts (training distribution, not the held-out set)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}: {n} pairs x {frames} frames, same noise for every candidate, the "
             f"shipped sampler (colour guidance {SamplerConfig().guidance:g}), evaluator version {EVALUATOR_VERSION}; "
             "mean ± 95% CI over pairs.", "",
             "| weights (sha256) | setting | " + " | ".join(SCORES) + " |", "|---" * (len(SCORES) + 2) + "|"]
    for p in paths:
        for key, label in names.items():
            cells = [f"{m:.3f} ± {c:.3f}" for m, c in (table[p][key][s] for s in SCORES)]
            lines.append(f"| `{p}` ({sha[p][:8]}) | {label} | " + " | ".join(cells) + " |")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "weights_validation.md").write_text("\n".join(lines) + "\n")
    (Path(out) / "weights_validation.json").write_text(json.dumps(
        {"pairs": pairs, "frames": frames, "results": {p: {"sha256": sha[p], "per_pair": res[p]} for p in paths}},
        indent=1))
    print("\n".join(lines))
    return table
