"""`python -m backend.bench policies`: quality-efficiency sweep of the cache policies.

Held-out prompts/seeds (never used in training) x policies x budgets (shares of the full cache at the
rollout length), each against the full-cache reference with the same noise. Per run: per-frame PSNR/SSIM
against the reference, world-consistency scores, per-frame latency, end-to-end time, peak KV bytes,
policy (and salience-head) overhead per chunk. Resumable (one JSON per run under runs/bench/policies/),
parallel across processes; writes docs/benchmarks/policies.{json,md} and PNG plots.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..evalset import EVAL_PAIRS

SHARES = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
DEFAULT_POLICIES = ("window", "sink", "deep_forcing", "h2o", "tova", "snapkv", "flowcache", "packcache",
                    "tempcache", "pafu", "oracle", "random")
SCORES = ("adherence", "identity_persistence", "background_revisit", "landmark_revisit", "drift")


def _job_path(root: Path, i: int, policy: str, share: float | None, frames: int) -> Path:
    tag = "full" if share is None else f"{policy}_{share:.4f}"
    return root / f"pair{i:02d}_{frames}_{tag}.json"


def run_one(job) -> dict:
    """One rollout; the full-cache reference of each pair is also saved as frames for PSNR/SSIM."""
    import torch
    from ..consistency import evaluate_video
    from ..loading import shipped
    from ..metrics import psnr_per_frame, ssim_per_frame
    from ..policies import Full
    from ..policies.build import build_policy
    from ..stepper import Stepper
    torch.set_num_threads(1)
    i, prompt, seed, policy, share, frames, root = job
    root = Path(root)
    path = _job_path(root, i, policy, share, frames)
    if path.is_file():
        return json.loads(path.read_text())
    model, ae = shipped()
    cfg = model.cfg
    pol = Full() if share is None else build_policy(policy, f"{share * 100:.4f}%", frames, model, ae, prompt, seed)
    st = Stepper(model, ae, prompt, frames, seed=seed, policy=pol, preview=False)
    t0 = time.perf_counter()
    peak, evict_ms = 0, []
    for rec in st.run():
        peak = max(peak, int(rec.nbytes.sum()))
        if rec.phase == "evict":
            evict_ms.append(rec.ms)
    total = time.perf_counter() - t0
    ref_file = root / f"pair{i:02d}_{frames}_reference.npy"
    if share is None:
        np.save(ref_file, st.frames)
    scores = evaluate_video(st.frames, prompt)
    scores.pop("per_frame_adherence")
    out = {"pair": i, "prompt": prompt, "seed": seed, "policy": "full" if share is None else policy, "share": share,
           "budget_tokens": pol.budget, "scores": scores, "frame_ms": st.frame_ms.tolist(),
           "total_s": total, "peak_kv_bytes": peak, "evict_ms_mean": float(np.mean(evict_ms)),
           "chunk_ms_mean": float(st.frame_ms.mean() * cfg.chunk_frames),
           "head_ms_total": getattr(pol, "head_ms", 0.0)}
    if share is not None and ref_file.is_file():
        ref = np.load(ref_file)
        out["psnr"] = psnr_per_frame(st.frames, ref).tolist()
        out["ssim"] = ssim_per_frame(st.frames, ref).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def run(prompts: int = 8, frames: int = 256, policies=DEFAULT_POLICIES, shares=SHARES, workers: int = 2,
        out: str = "docs/benchmarks", root: str = "runs/bench/policies") -> dict:
    pairs = EVAL_PAIRS[:prompts]
    refs = [(i, p, s, "full", None, frames, root) for i, (p, s) in enumerate(pairs)]
    jobs = [(i, p, s, pol, sh, frames, root) for i, (p, s) in enumerate(pairs) for pol in policies for sh in shares]
    results = []
    with mp.get_context("spawn").Pool(workers) as pool:
        results += list(tqdm(pool.imap(run_one, refs), total=len(refs), desc="full-cache references"))
        results += list(tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc="policy x budget runs"))
    report = summarise(results, frames)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "policies.json").write_text(json.dumps(report, indent=1))
    (Path(out) / "policies.md").write_text(markdown(report))
    print(markdown(report))
    return report


def _mean_ci(v) -> tuple[float, float]:
    v = np.array([x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def summarise(results: list[dict], frames: int) -> dict:
    full = {r["pair"]: r for r in results if r["policy"] == "full"}
    rows = []
    keys = sorted({(r["policy"], r["share"]) for r in results if r["policy"] != "full"}, key=lambda k: (k[0], k[1]))
    for pol, sh in keys:
        rs = [r for r in results if r["policy"] == pol and r["share"] == sh]
        row = {"policy": pol, "share": sh, "n": len(rs)}
        for s in SCORES:
            row[s] = _mean_ci([r["scores"][s] for r in rs])
        row["psnr"] = _mean_ci([float(np.mean(np.minimum(r["psnr"], 100))) for r in rs if "psnr" in r])
        row["ssim"] = _mean_ci([float(np.mean(r["ssim"])) for r in rs if "ssim" in r])
        row["speedup_vs_full"] = _mean_ci([full[r["pair"]]["total_s"] / r["total_s"] for r in rs if r["pair"] in full])
        row["latency_ratio_256_32"] = _mean_ci([np.median(r["frame_ms"][-8:]) / np.median(r["frame_ms"][28:36])
                                                for r in rs])
        row["overhead_share"] = _mean_ci([r["evict_ms_mean"] / r["chunk_ms_mean"] for r in rs])
        row["peak_kv_mb"] = _mean_ci([r["peak_kv_bytes"] / 2 ** 20 for r in rs])
        rows.append(row)
    ref = [{s: _mean_ci([r["scores"][s] for r in full.values()]) for s in SCORES}]
    return {"frames": frames, "rows": rows, "full": ref,
            "full_total_s": _mean_ci([r["total_s"] for r in full.values()]),
            "full_peak_kv_mb": _mean_ci([r["peak_kv_bytes"] / 2 ** 20 for r in full.values()])}


def markdown(rep: dict) -> str:
    cols = ("psnr", "ssim") + SCORES + ("speedup_vs_full", "latency_ratio_256_32", "overhead_share", "peak_kv_mb")
    lines = [f"# Policy benchmark: {rep['frames']}-frame rollouts, mean ± 95% CI over held-out prompts", "",
             "| policy | budget | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rep["rows"]:
        cells = [f"{r[c][0]:.3f} ± {r[c][1]:.3f}" if not math.isnan(r[c][0]) else "n/a" for c in cols]
        lines.append(f"| {r['policy']} | 1/{round(1 / r['share'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
