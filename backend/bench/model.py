"""`python -m backend.bench model`: quality and speed of the shipped model on the held-out set.

Quality: the 32 held-out prompt/seed pairs (``backend.evalset``, never used in training), full cache to
256 frames (scored up to twice the training clip length, and as a curve in 32-frame segments out to 256)
and the `window` policy (16 frames) to 128 frames. Speed: per-frame time (all denoise steps + commit +
decode) with 16 frames of context, and the full-cache latency curve to 256 frames. Resumable: each
prompt's result is cached under runs/bench/model/<weights id>/. Writes docs/results/model.{json,md} and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import SamplerConfig
from ..consistency import EVALUATOR_VERSION, contrast, evaluate_video
from ..evalset import EVAL_PAIRS
from ..loading import DEFAULT_AE, DEFAULT_MODEL, file_hash, weights_tag
from .store import read_result, write_result

TRAIN_CLIP = 24  # the CPU recipes' long training clips (frames); the GPU recipes train on 32 and 48
SEGMENT = 32
SCORES = (
    "adherence",
    "frames_all_found",
    "identity_persistence",
    "background_revisit",
    "landmark_revisit",
    "drift",
    "extra_objects",
)


def rollout(prompt, seed, frames, policy=None, weights: str | None = None, sampler=None):
    """A Stepper run to the end: the shipped student (or the student file `weights`) with the default
    sampler (or the SamplerConfig `sampler`) and the full cache (or `policy`), no previews, one thread."""
    import torch

    from ..loading import DEFAULT_MODEL, student_and_ae

    torch.set_num_threads(1)
    return run_to_end(*student_and_ae(str(weights or DEFAULT_MODEL)), prompt, frames, seed, policy, sampler)


def run_to_end(model, ae, prompt, frames, seed, policy=None, sampler=None):
    """A Stepper of a loaded model run to the end with the default sampler and the full cache (or the given
    SamplerConfig `sampler` / `policy`), no previews."""
    from ..stepper import Stepper

    kw = {k: v for k, v in (("sampler", sampler), ("policy", policy)) if v is not None}
    st = Stepper(model, ae, prompt, frames, seed=seed, preview=False, **kw)
    for _ in st.run():
        pass
    return st


def generate(prompt, seed, frames, policy, weights: str | None = None, sampler=None):
    """Frames and per-frame ms of one rollout (see `rollout`)."""
    st = rollout(prompt, seed, frames, policy, weights, sampler)
    return st.frames, st.frame_ms


def score(frames, prompt) -> dict:
    r = evaluate_video(frames, prompt)
    r.pop("per_frame_adherence")
    return r


def validation_scores(prompt, seed, frames, weights: str | None = None, sampler=None) -> dict:
    """The validation benches' unit (weights, sampler): full cache to `frames` (scored on frame 0 alone, the
    prompt-only generation, on frames 0-47 and on all) and window(16), same noise; plus the full cache's
    median ms per frame."""
    from ..policies import make_policy

    full, ms = generate(prompt, seed, frames, make_policy("full"), weights=weights, sampler=sampler)
    win, _ = generate(prompt, seed, frames, make_policy("window", frames=16), weights=weights, sampler=sampler)
    return {
        "full_first": score(full[:1], prompt),
        "full_2x": score(full[: 2 * TRAIN_CLIP], prompt),
        "full_all": score(full, prompt),
        "window": score(win, prompt),
        "ms": float(np.median(ms)),
    }


def eval_pair(job) -> dict:
    """Full cache to `full_frames` and window(16) to `window_frames` for one held-out pair."""
    from ..policies import make_policy

    i, prompt, seed, full_frames, window_frames, cache_dir = job
    path = Path(cache_dir) / f"pair{i:02d}_{full_frames}_{window_frames}.json"
    cached = read_result(path)
    if cached is not None:
        return cached
    full, full_ms = generate(prompt, seed, full_frames, make_policy("full"))
    win, _ = generate(prompt, seed, window_frames, make_policy("window", frames=16))
    out = {
        "prompt": prompt,
        "seed": seed,
        "full_first": score(full[:1], prompt),
        "full_2x": score(full[: 2 * TRAIN_CLIP], prompt),
        "full_all": score(full, prompt),
        "window": score(win, prompt),
        "full_segments": [score(full[s : s + SEGMENT], prompt) for s in range(0, full_frames, SEGMENT)],
        "contrast_full": contrast(full).tolist(),
        "contrast_window": contrast(win).tolist(),
    }
    write_result(path, out)
    if i < 4:
        from ..video_io import write_video

        write_video(
            np.concatenate([full[:window_frames], win], axis=2), Path("out/bench") / f"pair{i:02d}_full_vs_window.mp4"
        )
    return out


def low_frames(contrast_per_frame: list[float], lo: float) -> list[int]:
    """Indices of the frames whose contrast is below `lo` (the dataset's minimum): near-blank frames."""
    return [i for i, c in enumerate(contrast_per_frame) if c < lo]


def collapse_lines(r: dict) -> list[str]:
    """Where generated frames fell below the dataset's contrast range, per held-out video (the runs of frames)."""
    out, per = [], r.get("per_prompt", [])
    for key, name in (("full_low_contrast_frames", "full cache"), ("window_low_contrast_frames", "window 16")):
        if not any(key in p for p in per):  # reports from before the field: no line
            continue
        hits = [(p, p[key]) for p in per if p[key]]
        n = sum(len(f) for _, f in hits)
        text = "; ".join(f'"{p["prompt"]}" (seed {p["seed"]}): {spans(f)}' for p, f in hits)
        out.append(
            f"Frames below the dataset's contrast range, {name}: {n} in {len(hits)} of {len(per)} videos"
            + (f" ({text})." if hits else ".")
        )
    return out


def spans(frames: list[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9"."""
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(f"{start}" if start == f else f"{start}-{f}")
            start = None
    return ", ".join(parts)


def dataset_contrast(n: int = 64) -> tuple[float, float]:
    """Range (1st-99th percentile and min/max) of per-frame contrast in world clips."""
    from ..data import clip_batch

    frames, _ = clip_batch(np.random.default_rng(5), n, 48)
    c = contrast(frames.reshape(-1, *frames.shape[2:]))
    return float(c.min()), float(c.max())


def speed(frames: int = 256, context: int = 16) -> dict:
    """Single process (torch default threads): window(16) per-frame time and the full-cache curve."""
    import torch

    from ..loading import load_autoencoder, load_model
    from ..policies import make_policy
    from ..stepper import Stepper

    torch.set_num_threads(2)
    prompt, seed = EVAL_PAIRS[0]  # names colours, so the shipped sampler guides it
    model, ae = load_model(), load_autoencoder()
    unguided = SamplerConfig(guidance=1.0, first_guidance=1.0)
    out = {}
    for name, pol, n, smp in (
        ("window16", make_policy("window", frames=context), 96, SamplerConfig()),
        ("full", make_policy("full"), frames, SamplerConfig()),
        ("window16_unguided", make_policy("window", frames=context), 96, unguided),
    ):
        st = Stepper(model, ae, prompt, n, seed=seed, policy=pol, preview=False, sampler=smp)
        for _ in st.run():
            pass
        out[name] = st.frame_ms.tolist()
    w = np.array(out["window16"][context + 4 :])
    return {
        "median_ms_16_context": float(np.median(w)),
        "p90_ms_16_context": float(np.percentile(w, 90)),
        "median_ms_16_context_unguided": float(np.median(out["window16_unguided"][context + 4 :])),
        "full_curve_ms": out["full"],
        "window_curve_ms": out["window16"],
        "threads": 2,
    }


def summarise(results: list[dict]) -> dict:
    def agg(key):
        d = {}
        for s in SCORES:
            v = np.array([r[key][s] for r in results], float)
            v = v[~np.isnan(v)]
            d[s] = {
                "mean": float(v.mean()) if len(v) else float("nan"),
                "ci95": float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"),
                "n": int(len(v)),
            }
        return d

    segs = [[r["full_segments"][j]["adherence"] for r in results] for j in range(len(results[0]["full_segments"]))]
    # the first frame alone (prompt-only generation); pair results cached before it was scored lack it
    first = {"full_first": agg("full_first")} if all("full_first" in r for r in results) else {}
    return first | {
        "full_2x_train": agg("full_2x"),
        "full_256": agg("full_all"),
        "window16_128": agg("window"),
        "full_segment_adherence": [float(np.mean(s)) for s in segs],
        "open_colour_identity": agg_open(results),
        "contrast_full": [
            float(np.min([min(r["contrast_full"]) for r in results])),
            float(np.max([max(r["contrast_full"]) for r in results])),
        ],
        "contrast_window": [
            float(np.min([min(r["contrast_window"]) for r in results])),
            float(np.max([max(r["contrast_window"]) for r in results])),
        ],
    }


def agg_open(results) -> float:
    """Mean identity persistence (full cache, 2x training length) on prompts that leave a colour open."""
    from ..prompt import parse

    v = [r["full_2x"]["identity_persistence"] for r in results if any(c is None for c, _ in parse(r["prompt"]).objects)]
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def plots(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = report.get("speed")
    if sp:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(sp["full_curve_ms"], label="full cache", lw=1)
        ax.plot(sp["window_curve_ms"], label="window (16 frames)", lw=1)
        ax.set_xlabel("frame index")
        ax.set_ylabel("time per frame (ms)")
        ax.set_title("Per-frame latency, 2-core CPU (4 guided denoise steps + commit + decode)", fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "model_latency.png", dpi=120)
        plt.close(fig)
    q = report.get("quality")
    if q:
        seg = q["full_segment_adherence"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        xs = [SEGMENT * (i + 0.5) for i in range(len(seg))]
        ax.plot(xs, seg, "o-", label="full cache")
        ax.axvline(TRAIN_CLIP, color="grey", ls="--", label=f"CPU recipes' long clip ({TRAIN_CLIP} frames)")
        ax.axhline(0.85, color="red", ls=":", label="target 0.85")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("frame index (centre of a 32-frame segment)")
        ax.set_ylabel("prompt adherence (fraction)")
        ax.set_title("Full-cache quality over 256 frames (32 held-out prompts)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "model_quality_curve.png", dpi=120)
        plt.close(fig)


def run(
    prompts: int = 32,
    workers: int = 2,
    full_frames: int = 256,
    window_frames: int = 128,
    out: str = "docs/results",
    skip_speed: bool = False,
    skip_quality: bool = False,
) -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(DEFAULT_MODEL.name),
        "model_hash": file_hash(DEFAULT_MODEL),
        "ae_hash": file_hash(DEFAULT_AE),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "dataset_contrast": dataset_contrast(),
        "sampler": dataclasses.asdict(SamplerConfig()),
    }
    if not skip_quality:
        # resumed runs never mix weights, sampler settings or evaluator versions
        cache = f"runs/bench/model/{weights_tag(('student', 'autoencoder'))}-e{EVALUATOR_VERSION}"
        jobs = [(i, p, s, full_frames, window_frames, cache) for i, (p, s) in enumerate(EVAL_PAIRS[:prompts])]
        with mp.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(eval_pair, jobs), total=len(jobs), desc="held-out prompts"))
        report["quality"] = summarise(results)
        lo = report["dataset_contrast"][0]
        report["per_prompt"] = [
            {
                **{k: r[k] for k in ("prompt", "seed", "full_first", "full_2x", "full_all", "window")},
                "full_low_contrast_frames": low_frames(r["contrast_full"], lo),
                "window_low_contrast_frames": low_frames(r["contrast_window"], lo),
            }
            for r in results
        ]
    if not skip_speed:
        report["speed"] = speed(full_frames)
    keep = {k for k, skipped in (("quality", skip_quality), ("speed", skip_speed)) if skipped}
    report.update(kept_sections(out_dir / "model.json", report, keep))
    (out_dir / "model.json").write_text(json.dumps(report, indent=1))
    plots(report, out_dir)
    (out_dir / "model.md").write_text(markdown(report))
    print(markdown(report))
    return report


def kept_sections(path: Path, report: dict, sections: set[str]) -> dict:
    """The skipped `sections` (quality, speed) of an earlier report at `path`, kept when it measured the same
    weights (model and autoencoder hashes), with their dates; {} otherwise (a skipped section is left out,
    never carried over from other weights)."""
    old = read_result(path) if sections else None
    if old is None or (old.get("model_hash"), old.get("ae_hash")) != (report["model_hash"], report["ae_hash"]):
        return {}
    out = {}
    for sec in sections:
        if sec in old:
            out[sec] = old[sec]
            out[f"{sec}_date"] = old.get(f"{sec}_date", old.get("date"))
            if sec == "quality" and "per_prompt" in old:
                out["per_prompt"] = old["per_prompt"]
    return out


def markdown(r: dict) -> str:
    dates = "; ".join(
        f"{sec} measured {r[f'{sec}_date']}"
        for sec in ("quality", "speed")
        if f"{sec}_date" in r and r[f"{sec}_date"] != r["date"]
    )
    lines = [
        f"# Model benchmark ({r['date']}" + (f"; {dates}" if dates else "") + ")",
        "",
        f"Weights `{r['model']}` (sha256 {r['model_hash']}), autoencoder sha256 {r['ae_hash']}. "
        f"Dataset frame contrast range: {r['dataset_contrast'][0]:.1f}-{r['dataset_contrast'][1]:.1f} (grey-level "
        "std).",
        "",
    ]
    if "sampler" in r:
        smp = r["sampler"]
        lines += [
            f"Sampler: {smp['first_steps'] or smp['steps']} Euler steps for the first chunk, {smp['steps']} per "
            "later chunk, "
            f"colour guidance {smp['first_guidance']:g} / {smp['guidance']:g} (first / later chunks; 1 = off).",
            "",
        ]
    q = r.get("quality")
    if q:
        lines += [
            "## Quality on the 32 held-out prompt/seed pairs (mean ± 95% CI over prompts)",
            "",
            "| setting | " + " | ".join(SCORES) + " |",
            "|---" * (len(SCORES) + 1) + "|",
        ]
        for name, key in (
            ("full cache, frame 0 (from the prompt alone)", "full_first"),
            ("full cache, frames 0-47 (2x training clip)", "full_2x_train"),
            ("full cache, frames 0-255", "full_256"),
            ("window 16, frames 0-127", "window16_128"),
        ):
            if key not in q:
                continue
            cells = [
                f"{q[key][s]['mean']:.3f} ± {q[key][s]['ci95']:.3f} (n={q[key][s]['n']})" if q[key][s]["n"] else "n/a"
                for s in SCORES
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Full-cache prompt adherence per 32-frame segment: "
            + ", ".join(f"{v:.2f}" for v in q["full_segment_adherence"]),
            f"Identity persistence on prompts with open colours (full, 0-47): {q['open_colour_identity']:.3f}.",
            f"Contrast range, full cache: {q['contrast_full'][0]:.1f}-{q['contrast_full'][1]:.1f}; "
            f"window: {q['contrast_window'][0]:.1f}-{q['contrast_window'][1]:.1f}.",
            *collapse_lines(r),
            "",
        ]
    s = r.get("speed")
    if s:
        fc = s["full_curve_ms"]
        lines += [
            "## Speed (2-core CPU, 2 torch threads, batch 1)",
            "",
            f"Median time per frame with 16 frames of context (window policy): **{s['median_ms_16_context']:.1f} ms** "
            f"(p90 {s['p90_ms_16_context']:.1f} ms)"
            + (
                f"; without colour guidance {s['median_ms_16_context_unguided']:.1f} ms"
                if "median_ms_16_context_unguided" in s
                else ""
            )
            + ".",
            "",
            "Full-cache per-frame time at frame "
            + ", ".join(
                f"{i}: {np.median(fc[max(i - 4, 0) : i + 4]):.0f} ms"
                for i in (16, 32, 64, 128, 192, 255)
                if i < len(fc)
            ),
            "",
        ]
    lines += ["![latency](model_latency.png)", "![quality](model_quality_curve.png)", ""]
    return "\n".join(lines)
