"""`python -m backend.bench sampler`: choose sampler settings on *validation* prompts.

Validation pairs are drawn from the training distribution (``validation.validation_pairs``, a fixed seed),
never from the held-out evaluation set, so sampler defaults are not tuned on the evaluation. Settings are
the sweep that chose the shipped defaults (`SETTINGS`) unless given on the command line as
``--setting "LABEL: KEY=VALUE KEY=VALUE"`` (fields of `SamplerConfig`; unnamed fields keep the shipped value).
The first setting is the baseline of the paired comparison. Writes <out>/sampler.{md,json}.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..config import SamplerConfig
from .model import SCORES
from .validation import Variant, paired, paired_lines, sweep, table, table_lines

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


def run(
    n: int = 24,
    frames: int = 96,
    workers: int = 2,
    out: str = "docs/decisions",
    settings: dict[str, SamplerConfig] | None = None,
) -> dict:
    settings = settings or SETTINGS
    res = sweep([Variant(name, cfg) for name, cfg in settings.items()], n, frames, workers)
    scores = tuple(s for s in SCORES if s != "drift")  # drift is reported by the model bench
    tab = table(res, scores)
    pair = paired(res)
    lines = [
        "# Sampler settings on validation prompts (training distribution, not the held-out set)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}: {n} prompts x {frames} frames with the shipped weights, the same "
        "noise for every setting; mean ± 95% CI over prompts. ms: median per frame (full cache, all denoise "
        "steps + commit + decode, 1 thread, two runs sharing the 2 cores).",
        "",
        *[f"- {name}: `{_differences(cfg)}`" for name, cfg in settings.items()],
        "",
        *table_lines(tab, frames, scores),
        *paired_lines(pair, next(iter(settings)), frames),
    ]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "sampler.md").write_text("\n".join(lines) + "\n")
    (Path(out) / "sampler.json").write_text(
        json.dumps(
            {
                "frames": frames,
                "settings": {name: dataclasses.asdict(cfg) for name, cfg in settings.items()},
                "table": tab,
                "paired": pair,
                "per_pair": res,
            },
            indent=1,
        )
    )
    print("\n".join(lines))
    return tab


def _differences(cfg: SamplerConfig) -> str:
    """The fields where `cfg` differs from the shipped sampler, as KEY=VALUE (or 'shipped sampler')."""
    base = SamplerConfig()
    diff = [
        f"{f.name}={getattr(cfg, f.name)}"
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != getattr(base, f.name)
    ]
    return " ".join(diff) or "shipped sampler"
