"""`python -m backend.bench policies`: quality-efficiency sweep of the cache policies.

Held-out prompts/seeds (never used in training) x policies x budgets (shares of the full cache at the
rollout length), each against the full-cache reference with the same noise. Per run: per-frame PSNR/SSIM
against the reference, world-consistency scores, per-frame latency, end-to-end time, peak KV bytes,
policy (and salience-head) overhead per chunk. Resumable (one JSON per run under runs/bench/policies/),
parallel across processes; writes docs/results/policies.{json,md} and PNG plots.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from ..consistency import EVALUATOR_VERSION
from ..evalset import EVAL_PAIRS
from ..policies.base import ENGINE_VERSION, PROBE_PATH
from ..summary import RunSummary
from .model import score
from .plots import plot
from .report import markdown, summarise
from .spec import SCORES, split_spec  # noqa: F401  (re-exported: the sweep's vocabulary)
from .store import read_result, write_result

SHARES = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
DEFAULT_POLICIES = (
    "window",
    "sink",
    "deep_forcing",
    "h2o",
    "tova",
    "snapkv",
    "flowcache",
    "packcache",
    "tempcache",
    "pafu",
    "pafu:granularity=token",
    "pafu:labels=hindsight",
    "oracle",
    "random",
    "h2o:storage=int4",
    "h2o:storage=int4;residual=2",
    "h2o:storage=int4;quant=token",
    "window:storage=int4",
)  # name[:k=v;...]


# Parameters added after results were stored, with the value every earlier run had: every query (probes),
# per-chunk eviction (periods), TempCache merging at every commit (merge_at).
ADDED_PARAMETERS = {"probe": 1.0, "period": 1, "merge_at": "commit"}


def policy_signature(spec: str) -> str:
    """Short hash of the policy's resolved settings (class defaults + the spec's parameters), so resumed
    results never outlive a change of a policy's defaults."""
    import hashlib

    from ..policies import make_policy
    from ..policies.params import parameters

    name, params = split_spec(spec)
    settings = {k: p.default for k, p in parameters(name).items()}
    settings.update(params)
    if settings.get("storage") == "fp32" and settings.get("salient_storage") is None:
        settings.pop("quant", None)  # the integer scheme cannot change an fp32 run
    for key, before in ADDED_PARAMETERS.items():  # at the value runs had before the parameter existed,
        if key in settings and settings[key] == before:  # it leaves their signature as it was
            settings.pop(key)
    if "probe" in settings:
        settings["_probe_path"] = PROBE_PATH
    settings["_engine"] = ENGINE_VERSION  # cache code that changes what a run computes
    files = make_policy(name, **params).scorer.signature_files()  # e.g. PaFu-KV's head: results depend on it
    if files:
        from ..loading import file_hash

        settings["_files"] = [file_hash(f) if Path(f).is_file() else None for f in files]
    return hashlib.sha1(json.dumps([name, settings], sort_keys=True).encode()).hexdigest()[:8]


def _job_path(root: Path, i: int, policy: str, share: float | None, frames: int) -> Path:
    safe = policy.replace(":", "-").replace("=", "").replace(";", "-")
    tag = f"full_e{ENGINE_VERSION}" if share is None else f"{safe}_{share:.4f}_{policy_signature(policy)}"
    return root / f"pair{i:02d}_{frames}_{tag}.json"


def run_one(job, ref: np.ndarray | None = None) -> dict:
    """One rollout. A full-cache reference run saves its frames beside the results (local runs) and returns
    them under "_frames" (Ray runs pass them to the policy runs as `ref`) for PSNR/SSIM."""
    import torch

    from ..build import build_policy
    from ..loading import shipped
    from ..metrics import psnr_per_frame, ssim_per_frame
    from ..policies import make_policy
    from ..stepper import Stepper

    torch.set_num_threads(1)
    i, prompt, seed, policy, share, frames, root, sampler = job
    root = Path(root)
    path = _job_path(root, i, policy, share, frames)
    ref_file = root / f"pair{i:02d}_{frames}_reference_e{ENGINE_VERSION}.npy"
    out = read_result(path)
    if out is not None:  # resumed
        if out.get("evaluator") != EVALUATOR_VERSION or SINK_SCORE not in out["scores"]:  # an older evaluator's
            out = _rescore(out, path, ref_file)
        if out is not None:
            if share is None and ref_file.is_file():
                out["_frames"] = np.load(ref_file)
            return out
    model, ae = shipped()
    cfg = model.geometry
    name, params = split_spec(policy)
    hind_file = root / f"pair{i:02d}_{frames}_hindsight.npz"  # the oracle's reference (attention of a full run)
    reference = None
    if name == "oracle" and hind_file.is_file():
        with np.load(hind_file) as z:
            reference = [z[f"layer{j}"] for j in range(len(z.files))]
    pol = (
        make_policy("full")
        if share is None
        else build_policy(
            name, f"{share * 100:.4f}%", frames, model, ae, prompt, seed, params, reference=reference, sampler=sampler
        )
    )
    if name == "oracle" and reference is None:  # the first oracle run of this pair: the builder ran the reference
        _save_hindsight(hind_file, pol.scorer.reference)
    st = Stepper(model, ae, prompt, frames, seed=seed, policy=pol, preview=False, sampler=sampler)
    t0 = time.perf_counter()
    run = RunSummary.of(st.run())  # the run's numbers, from its records alone
    total = time.perf_counter() - t0
    if share is None:  # timed as deployed: no attention statistics (the oracle runs its own)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(ref_file, st.frames)
    scores = score_run(st.frames, prompt)
    if share is not None:  # kept so a new evaluator can rescore without a rerun
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path.with_suffix(".npz"), frames=st.frames)
    out = {
        "pair": i,
        "prompt": prompt,
        "seed": seed,
        "policy": "full" if share is None else policy,
        "share": share,
        "evaluator": EVALUATOR_VERSION,
        "budget_tokens": pol.budget,
        "scores": scores,
        "total_s": total,
        **run.as_dict(),
        "attention_stats": st.attention,
        "chunk_ms_mean": float(run.frame_ms.mean() * cfg.chunk_frames),
    }
    if share is not None and ref is None and ref_file.is_file():
        ref = np.load(ref_file)
    if share is not None and ref is not None:
        out["psnr"] = psnr_per_frame(st.frames, ref).tolist()
        out["ssim"] = ssim_per_frame(st.frames, ref).tolist()
    write_result(path, out)
    if share is None:
        out["_frames"] = st.frames
    return out


def _rescore(out: dict, path: Path, ref_file: Path) -> dict | None:
    """A resumed result scored by an older evaluator, rescored from its saved frames (and rewritten); None
    when its frames were not kept (results from before frames were saved): the run is redone."""
    frames_file = ref_file if out["share"] is None else path.with_suffix(".npz")
    if not frames_file.is_file():
        return None
    if frames_file.suffix == ".npy":
        frames = np.load(frames_file)
    else:
        with np.load(frames_file) as z:
            frames = z["frames"]
    out.update(scores=score_run(frames, out["prompt"]), evaluator=EVALUATOR_VERSION)
    write_result(path, out)
    return out


SINK_SCORE = "sink_collapses"


def score_run(frames: np.ndarray, prompt: str) -> dict:
    """A run's scores: the world-consistency evaluator's and its sink-collapse events (`backend.sink_collapse`)."""
    from ..sink_collapse import sink_collapse

    return {**score(frames, prompt), SINK_SCORE: int(len(sink_collapse(frames)["events"]))}


def _save_hindsight(path: Path, reference: list[np.ndarray]) -> None:
    """Atomic write of the oracle's per-layer reference arrays (a worker may be reading them)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **{f"layer{j}": a for j, a in enumerate(reference)})


def _strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "_frames"}


SPLITS = ("heldout", "validation")


def split_pairs(split: str, prompts: int) -> list[tuple[str, int]]:
    """The held-out evaluation pairs (reported numbers) or validation pairs drawn like training scenes
    (where design choices are made, so the held-out set is never tuned on)."""
    if split == "heldout":
        return EVAL_PAIRS[:prompts]
    if split == "validation":
        from .validation import validation_pairs

        return validation_pairs(prompts)
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def check_specs(policies, shares) -> None:
    """Unknown policy names, bad parameters and shares outside (0, 1] fail before any work is spawned."""
    from ..policies import make_policy

    for spec in policies:
        name, params = split_spec(spec)
        make_policy(name, **params)
    bad = [sh for sh in shares if not 0 < sh <= 1]
    if bad:
        raise ValueError(f"budget shares must be in (0, 1] (a share of the full cache), got {bad}")


def runs_dir(root, split: str = "heldout", sampler=None) -> Path:
    """Where the sweep keeps its per-run results: keyed by model weights, sampler settings and split, so
    resumed runs never mix them. A policy's own weights (PaFu-KV's head) are in its run's signature
    (`policy_signature`), so retraining the head re-runs only the runs that use it."""
    from ..loading import weights_tag

    return Path(root) / weights_tag(("student", "autoencoder"), sampler=sampler) / split


def run(
    prompts: int = 8,
    frames: int = 256,
    policies=DEFAULT_POLICIES,
    shares=SHARES,
    workers: int = 2,
    out: str = "docs/results/policies",
    root: str = "runs/bench/policies",
    ray_address: str | None = None,
    split: str = "heldout",
    sampler=None,
) -> dict:
    """The sweep, on local processes or (with `ray_address`: 'local', 'auto' or 'ray://host:port') on Ray,
    every rollout with the SamplerConfig `sampler` (default: the shipped sampler).
    Writes policies.{json,md} and PNG plots (with `split="validation"`: policies_validation.*)."""
    import dataclasses

    from ..config import SamplerConfig
    from ..loading import MODELS_DIR, file_hash

    sampler = sampler or SamplerConfig()
    check_specs(policies, shares)
    pairs = split_pairs(split, prompts)
    root = str(runs_dir(root, split, sampler))
    refs = [(i, p, s, "full", None, frames, root, sampler) for i, (p, s) in enumerate(pairs)]
    jobs = [
        (i, p, s, pol, sh, frames, root, sampler) for i, (p, s) in enumerate(pairs) for pol in policies for sh in shares
    ]
    if ray_address:
        results = run_on_ray(refs, jobs, ray_address, Path(root))
    else:
        results = []
        with mp.get_context("spawn").Pool(workers) as pool:
            results += [
                _strip(r) for r in tqdm(pool.imap(run_one, refs), total=len(refs), desc="full-cache references")
            ]
            results += list(tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc="policy x budget runs"))
    report = summarise(results, frames)
    heads = {f.stem: file_hash(f)[:6] for f in sorted(MODELS_DIR.glob("salience_head*.safetensors"))}
    report.update(split=split, weights=Path(root).parent.name, heads=heads, sampler=dataclasses.asdict(sampler))
    name = "policies" if split == "heldout" else f"policies_{split}"
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.json").write_text(json.dumps(report, indent=1))
    (Path(out) / f"{name}.md").write_text(markdown(report, name))
    plot(report, results, Path(out), name)
    print(markdown(report))
    return report


def run_on_ray(refs: list, jobs: list, address: str, root: Path) -> list[dict]:
    """Ray path: one task per rollout (1 CPU each); the references' frames go to the policy tasks through the
    object store, so workers need no shared disk. Results come back to the driver, which writes them."""
    try:
        import ray
    except ImportError:
        raise SystemExit("--ray needs the optional dependency ray: pip install ray") from None
    started = not ray.is_initialized()
    if started:  # 'local' starts a single-node cluster here (Ray 2.x removed local_mode)
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            **({"num_cpus": 2} if address == "local" else {}),
        )
    task = ray.remote(num_cpus=1)(run_one)
    try:
        done_refs = list(
            tqdm(_ray_iter([task.remote(j) for j in refs]), total=len(refs), desc="full-cache references (ray)")
        )
        frames = {r["pair"]: ray.put(r.pop("_frames")) for r in done_refs}
        futures = [task.remote(j, frames[j[0]]) for j in jobs]
        results = list(tqdm(_ray_iter(futures), total=len(futures), desc="policy x budget runs (ray)"))
    finally:
        if started:
            ray.shutdown()
    for r in done_refs + results:  # resumable: the driver keeps one JSON per run
        i, pol, sh = r["pair"], r["policy"], r["share"]
        write_result(_job_path(root, i, pol, sh, len(r["frame_ms"])), r)
    return done_refs + results


def _ray_iter(futures):
    import ray

    pending = list(futures)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])
