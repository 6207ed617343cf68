"""`python -m backend.bench context`: how videos hold up as the cache's context grows.

For each prompt/seed pair, window caches of N frames and the full cache generate the same video (same
noise) to `frames`; each is scored for prompt adherence and extra objects, and for the frames whose
contrast falls below the training data's range (near-blank frames, the issue's "no collapse" check; `bench
model` names the held-out videos that have them). A diagnostic: it asks whether a collapse comes with the
length of the context the student attends to. Writes context_probe.{json,md} to --out.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

from tqdm import tqdm

from ..consistency import contrast
from .model import dataset_contrast, generate, low_frames, score, spans

WINDOWS = (16, 32, 48, 64, 96)


def parse_pair(text: str) -> tuple[str, int]:
    """'PROMPT@SEED' -> (prompt, seed); the prompt is checked against the grammar."""
    from ..prompt import parse

    prompt, sep, seed = text.rpartition("@")
    if not sep or not seed.strip().isdigit():
        raise ValueError(f"--pair expects 'PROMPT@SEED', got {text!r}")
    parse(prompt)
    return prompt.strip(), int(seed)


def _one(job) -> dict:
    from ..policies import make_policy

    prompt, seed, window, frames, lo = job
    video, _ = generate(
        prompt, seed, frames, make_policy("full") if window is None else make_policy("window", frames=window)
    )
    c = contrast(video)
    r = score(video, prompt)
    return {
        "prompt": prompt,
        "seed": seed,
        "cache": "full" if window is None else f"window {window}",
        "adherence": r["adherence"],
        "extra_objects": r["extra_objects"],
        "contrast_min": float(c.min()),
        "low_frames": low_frames(c.tolist(), lo),
    }


def run(
    pairs: list[tuple[str, int]],
    frames: int = 256,
    windows=WINDOWS,
    workers: int = 2,
    out: str = "docs/results/context_probe",
) -> list[dict]:
    lo = dataset_contrast()[0]
    jobs = [(p, s, w, frames, lo) for p, s in pairs for w in (*windows, None)]
    with mp.get_context("spawn").Pool(workers) as pool:
        rows = list(tqdm(pool.imap(_one, jobs), total=len(jobs), desc="context probe"))
    Path(out).mkdir(parents=True, exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "frames": frames, "data_contrast_min": lo, "rows": rows}
    (Path(out) / "context_probe.json").write_text(json.dumps(doc, indent=1))
    (Path(out) / "context_probe.md").write_text(markdown(doc))
    print(markdown(doc))
    return rows


def markdown(doc: dict) -> str:
    lines = [
        "# Context length and collapse",
        "",
        f"{doc['date']}: {doc['frames']} frames per video, the shipped student and sampler, the same noise for "
        f"every cache of a pair. Near-blank: contrast below the training data's minimum "
        f"({doc['data_contrast_min']:.1f}, grey-level std).",
        "",
        "| prompt (seed) | cache | adherence | extra objects / frame | lowest contrast | near-blank frames |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        low = r["low_frames"]
        lines.append(
            f"| {r['prompt']} ({r['seed']}) | {r['cache']} | {r['adherence']:.3f} | {r['extra_objects']:.2f} | "
            f"{r['contrast_min']:.1f} | {len(low)}" + (f": {spans(low)}" if low else "") + " |"
        )
    return "\n".join(lines) + "\n"
