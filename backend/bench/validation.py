"""Validation sweeps: the same validation pairs generated under several variants (sampler settings or
student weights), scored, tabulated, and compared *paired* against the first variant.

Shared by `python -m backend.bench sampler` and `python -m backend.bench weights`. Validation pairs come from
the training distribution (``validation_pairs``, a fixed seed), never from the held-out evaluation set, so
choosing a default here does not tune on the evaluation. Every variant sees the same noise per pair, so
a per-pair difference removes the between-prompt spread that dominates the unpaired intervals. Each
(variant, pair) result is cached under runs/bench/validation/, keyed by the weights' and autoencoder's
hashes, the sampler, the frame count and the evaluator version, so a sweep resumes and a re-run that adds
one variant only computes that one.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import SamplerConfig
from ..consistency import EVALUATOR_VERSION
from ..loading import DEFAULT_MODEL, file_hash, folder_autoencoder
from .model import SCORES, TRAIN_CLIP
from .report import mean_ci, paired_cell
from .store import read_result, write_result

CACHE = Path("runs/bench/validation")
RUNS = ("full_first", "full_2x", "full_all", "window")  # see model.validation_scores
RESULT_VERSION = 2  # bumped when a pair's result gains a run (2: the first frame scored on its own)
PAIRED = ("adherence", "identity_persistence", "landmark_revisit", "extra_objects")


@dataclass(frozen=True)
class Variant:
    label: str
    sampler: SamplerConfig = SamplerConfig()
    weights: str | None = None  # a student .safetensors; None = the shipped one

    def keys(self, pairs: list[tuple[str, int]], frames: int) -> list[str]:
        """Per pair, what its result depends on: weights and autoencoder bytes (hashed once), sampler, pair,
        frames, evaluator."""
        student = Path(self.weights or DEFAULT_MODEL)
        files = (file_hash(student), file_hash(folder_autoencoder(student.parent)))  # the pair it is decoded with
        return [
            hashlib.sha256(
                repr((*files, repr(self.sampler), p, s, frames, EVALUATOR_VERSION, RESULT_VERSION)).encode()
            ).hexdigest()[:16]
            for p, s in pairs
        ]


def validation_pairs(n: int = 12) -> list[tuple[str, int]]:
    from ..data import sample_train_scene

    rng = np.random.default_rng(4242)
    return [(spec.text(), seed) for spec, seed in (sample_train_scene(rng) for _ in range(n))]


def run_labels(frames: int) -> dict[str, str]:
    return {
        "full_first": "full, frame 0",
        "full_2x": f"full, 0-{min(2 * TRAIN_CLIP, frames) - 1}",
        "full_all": f"full, 0-{frames - 1}",
        "window": f"window 16, 0-{frames - 1}",
    }


def _one(job) -> tuple[int, dict]:
    from .model import validation_scores

    i, variant, prompt, seed, frames, path = job
    r = validation_scores(prompt, seed, frames, weights=variant.weights, sampler=variant.sampler)
    write_result(path, r)
    return i, r


def sweep(variants: list[Variant], n: int, frames: int, workers: int = 2) -> dict[str, list[dict]]:
    """Per variant label, the per-pair results (in pair order) of `validation_scores`, computed or cached."""
    if len({v.label for v in variants}) != len(variants):
        raise ValueError("variant labels must be distinct")
    pairs = validation_pairs(n)
    out: list[dict | None] = []  # variant-major, pair order
    todo = []
    for v in variants:
        for (prompt, seed), key in zip(pairs, v.keys(pairs, frames)):
            path = CACHE / f"{key}.json"
            out.append(read_result(path))
            if out[-1] is None:
                todo.append((len(out) - 1, v, prompt, seed, frames, str(path)))
    if todo:
        with mp.get_context("spawn").Pool(workers) as pool:
            for i, r in tqdm(pool.imap_unordered(_one, todo), total=len(todo), desc="validation rollouts"):
                out[i] = r
    return {v.label: out[k * n : (k + 1) * n] for k, v in enumerate(variants)}


def table(res: dict[str, list[dict]], scores=SCORES) -> dict:
    """Per variant and run, mean ± 95% CI over pairs of each score; plus the full cache's median ms."""
    return {
        name: {k: {s: mean_ci([r[k][s] for r in rs]) for s in scores} for k in RUNS}
        | {"ms": mean_ci([r["ms"] for r in rs])}
        for name, rs in res.items()
    }


def table_lines(tab: dict, frames: int, scores=SCORES) -> list[str]:
    labels = run_labels(frames)
    lines = ["| variant | run | " + " | ".join(scores) + " | ms |", "|---" * (len(scores) + 3) + "|"]
    for name, v in tab.items():
        for k in RUNS:
            cells = [f"{m:.3f} ± {c:.3f}" for m, c in (v[k][s] for s in scores)]
            ms = f"{v['ms'][0]:.0f}" if k == "full_2x" else ""
            lines.append(f"| {name} | {labels[k]} | " + " | ".join(cells) + f" | {ms} |")
    return lines


def paired(res: dict[str, list[dict]], metrics=PAIRED) -> dict:
    """Each variant minus the first, pair by pair: {label: {run: {metric: (mean, ci, n)}}} over the pairs
    where both are defined."""
    names = list(res)
    base = res[names[0]]
    out = {}
    for name in names[1:]:
        out[name] = {}
        for k in RUNS:
            out[name][k] = {}
            for s in metrics:
                d = [r[k][s] - b[k][s] for r, b in zip(res[name], base) if _defined(r[k][s]) and _defined(b[k][s])]
                out[name][k][s] = (*mean_ci(d), len(d))
    return out


def paired_lines(pair: dict, base: str, frames: int, metrics=PAIRED) -> list[str]:
    if not pair:
        return []
    labels = run_labels(frames)
    lines = [
        "",
        f"Paired differences, each variant minus **{base}** on the same pairs and noise (mean ± 95% CI "
        "over pairs; ▲ / ▼: the CI excludes 0; for extra_objects lower is better):",
        "",
        "| variant | run | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    for name, runs in pair.items():
        for k in RUNS:
            lines.append(f"| {name} | {labels[k]} | " + " | ".join(paired_cell(runs[k][s]) for s in metrics) + " |")
    return lines


def _defined(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))
