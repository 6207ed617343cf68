"""`python -m backend.bench weights A.safetensors B.safetensors ...`: compare student weights on validation
prompts, to decide which weights ship.

Validation pairs come from the training distribution (``validation.validation_pairs``), never from the
held-out evaluation set, so choosing weights here does not tune on the evaluation. Each candidate generates
the same pairs with the same noise: full cache to `frames` (scored on frames 0-47, twice the training clip,
and on all of them) and the `window` policy (16 frames); each later candidate is also compared with the
first, pair by pair. Writes docs/results/weights_validation.{md,json}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import SamplerConfig
from ..consistency import EVALUATOR_VERSION
from .model import SCORES
from .tables import weights_label, weights_record
from .validation import Variant, paired, paired_lines, sweep, table, table_lines


def check_paths(paths: list[str]) -> None:
    """Every candidate is an existing file, each given once (the sweep compares them pair by pair)."""
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no weights file {p}")
    if len(set(paths)) != len(paths):
        raise ValueError("the same weights file was given twice")


def run(paths: list[str], n: int = 24, frames: int = 96, workers: int = 2, out: str = "docs/decisions") -> dict:
    check_paths(paths)
    rec = {p: weights_record(p) for p in paths}
    labels = {p: weights_label(p, rec[p]) for p in paths}
    res = sweep([Variant(labels[p], weights=p) for p in paths], n, frames, workers)
    tab = table(res, SCORES)
    lines = [
        "# Student weights on validation prompts (training distribution, not the held-out set)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}: {n} pairs x {frames} frames, same noise for every candidate, the "
        f"shipped sampler (colour guidance {SamplerConfig().guidance:g}), evaluator version {EVALUATOR_VERSION}; "
        "mean ± 95% CI over pairs. ms: median per frame of the full cache.",
        "",
        *table_lines(tab, frames, SCORES),
        *paired_lines(paired(res), labels[paths[0]], frames),
    ]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "weights_validation.md").write_text("\n".join(lines) + "\n")
    (Path(out) / "weights_validation.json").write_text(
        json.dumps({"frames": frames, "results": {p: {**rec[p], "per_pair": res[labels[p]]} for p in paths}}, indent=1)
    )
    print("\n".join(lines))
    return tab
