"""`python -m backend.bench engines --base DIR`: the efficiency of this engine against another checkout's.

A refactor must not make generation slower. This runs the same jobs (full cache and each policy at the given
shares, held-out prompts, 256 frames, unguided as the efficiency benchmark) on two engines in one run: this
checkout and `--base` (e.g. a git worktree of the commit before the refactor), alternating job by job so both
meet the same machine load, each job in a fresh 1-thread process of its own checkout. Per job it reports the
per-frame time (all steps of a run over its frames) and the overhead share (the eviction steps plus the cost
of materialising attention for a policy's statistics, over the run's time), read from the StepRecords, which
both engines emit alike. Writes engines.json and README.md into --out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# run in the engine's own checkout: builds the policy with whichever builder that engine has
JOB = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from backend.config import SamplerConfig
from backend.loading import load_autoencoder, load_model, DEFAULT_AE, DEFAULT_MODEL
from backend.policies import make_policy
from backend.stepper import Stepper
try:
    from backend.build import build_policy
except ImportError:
    from backend.policies.build import build_policy
prompt, seed, policy, share, frames = json.loads(sys.argv[1])
model, ae = load_model(DEFAULT_MODEL), load_autoencoder(DEFAULT_AE)
sampler = SamplerConfig(guidance=1.0, first_guidance=1.0)
budget = None if share is None else f"{share * 100:.4f}%"
pol = make_policy("full") if share is None else build_policy(policy, budget, frames, model, ae, prompt, seed,
                                                                sampler=sampler)
st = Stepper(model, ae, prompt, frames, seed=seed, policy=pol, preview=False, sampler=sampler)
t0 = time.perf_counter()
ms = evict = stats = 0.0
for rec in st.run():
    ms += rec.ms
    stats += rec.stats_ms
    if rec.phase == "evict":
        evict += rec.ms
wall = time.perf_counter() - t0
print(json.dumps({"ms": ms, "evict_ms": evict, "stats_ms": stats, "wall_s": wall,
                  "frame_digest": __import__("hashlib").sha256(st.frames.tobytes()).hexdigest()[:16]}))
"""


def run_job(root: Path, job: list) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(job)], cwd=root, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"{root}: {job}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict], frames: int) -> list[dict]:
    """Per (policy, share): each engine's median per-frame time and overhead share over the prompts, and the
    new engine's change in per-frame time (%)."""
    out = []
    keys = sorted({(r["policy"], r["share"]) for r in rows}, key=lambda k: (k[1] is not None, k[0], k[1] or 0))
    for pol, share in keys:
        row = {"policy": pol, "share": share}
        for eng in ("base", "new"):
            rs = [r for r in rows if r["policy"] == pol and r["share"] == share and r["engine"] == eng]
            row[f"{eng}_ms_per_frame"] = float(np.median([r["ms"] / frames for r in rs]))
            row[f"{eng}_overhead"] = float(np.median([(r["evict_ms"] + r["stats_ms"]) / r["ms"] for r in rs]))
        pairs = [
            (a, b)
            for a in rows
            for b in rows
            if a["engine"] == "base"
            and b["engine"] == "new"
            and a["policy"] == b["policy"] == pol
            and a["share"] == b["share"] == share
            and a["pair"] == b["pair"]
        ]
        row["change_pct"] = float(np.median([100 * (b["ms"] / a["ms"] - 1) for a, b in pairs]))
        row["same_frames"] = f"{sum(a['frame_digest'] == b['frame_digest'] for a, b in pairs)}/{len(pairs)}"
        out.append(row)
    return out


def markdown(doc: dict) -> str:
    lines = [
        "# Efficiency: this engine against the one before the redesign",
        "",
        f"`{doc['command']}`. Weights: the shipped student and autoencoder. Engines: this checkout "
        f"({doc['new_commit']}) and `{doc['base']}` ({doc['base_commit']}), alternating job by job, "
        f"{doc['workers']} 1-thread worker(s) on {doc['machine']}; {len(doc['pairs'])} held-out prompts, "
        f"{doc['frames']} frames, unguided; {doc['minutes']:.0f} minutes in all.",
        "",
        "Per-frame time: all steps of a run over its frames (median over the prompts). Overhead: the eviction "
        "steps plus the cost of materialising attention for the policy's statistics, over the run's time. "
        "Change: the new engine's per-frame time against the old one's, paired per prompt (median).",
        "",
        "| policy | share | ms/frame before | ms/frame now | change | overhead before | overhead now | same frames |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        share = "full" if r["share"] is None else f"1/{round(1 / r['share'])}"
        lines.append(
            f"| {r['policy']} | {share} | {r['base_ms_per_frame']:.1f} | {r['new_ms_per_frame']:.1f} | "
            f"{r['change_pct']:+.1f}% | {100 * r['base_overhead']:.1f}% | {100 * r['new_overhead']:.1f}% | "
            f"{r['same_frames']} |"
        )
    return "\n".join(lines) + "\n"


def run(
    base: str, prompts: int, frames: int, policies: tuple[str, ...], shares: tuple[float, ...], workers: int, out: str
) -> None:
    from tqdm import tqdm

    from ..evalset import EVAL_PAIRS

    roots = {"base": Path(base).resolve(), "new": Path(__file__).resolve().parents[2]}
    pairs = EVAL_PAIRS[:prompts]
    specs = [("full", None)] + [(p, s) for p in policies for s in shares]
    jobs = [(eng, i, pol, sh) for i in range(len(pairs)) for pol, sh in specs for eng in ("base", "new")]
    t0 = time.time()

    def one(job):
        eng, i, pol, sh = job
        r = run_job(roots[eng], [pairs[i][0], pairs[i][1], pol, sh, frames])
        return {"engine": eng, "pair": i, "policy": pol, "share": sh, **r}

    with ThreadPoolExecutor(workers) as pool:
        rows = list(tqdm(pool.map(one, jobs), total=len(jobs), desc="jobs"))

    def commit(root):
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()

    import platform

    doc = {
        "command": "python -m backend.bench engines " + " ".join(sys.argv[2:]),
        "base": base,
        "base_commit": commit(roots["base"]),
        "new_commit": commit(roots["new"]),
        "frames": frames,
        "pairs": pairs,
        "workers": workers,
        "machine": platform.processor() or platform.machine(),
        "minutes": (time.time() - t0) / 60,
        "rows": summarise(rows, frames),
        "runs": rows,
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "engines.json").write_text(json.dumps(doc, indent=1) + "\n")
    (folder / "README.md").write_text(markdown(doc))
    print(markdown(doc))
