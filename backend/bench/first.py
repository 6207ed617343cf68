"""`python -m backend.bench first [WEIGHTS ...]`: where the student's first frame goes wrong.

The first chunk is generated from the prompt alone, and what it draws the later chunks carry on. On
validation pairs (training distribution, never the held-out set), for each student weights file:
- **generated**: frame 0 of a rollout with the shipped sampler (first-chunk steps and colour guidance);
- **from the ground truth at t0**: the world's own frame 0, encoded, noised to level t0 and denoised by the
  first chunk's Euler schedule from there, unguided (SDEdit, Meng et al. 2022, arXiv 2108.01073). At t0 = 1
  this is unguided generation; the lower t0, the more of the answer the student is given, so the level at
  which the scores recover says which noise levels it has not learnt: placing the objects (count, extra
  objects) is decided at high noise, drawing their shapes at middle noise;
- **references**: the ground-truth frame itself and its autoencoder reconstruction (the ceiling of any
  model in this latent space).

Scores, per frame (mean ± 95% CI over pairs): `whole`, the share of prompted objects found as a whole
sprite of their shape and colour (an open colour: any colour the prompt does not name); `adherence`, the
evaluator's (it also accepts a sprite of the right colour cut by the wall or the frame edge, and excuses an
object that may be behind the wall); `extra_objects`, sprite-coloured components beyond the prompted count.
Writes docs/results/first_frame.{md,json}; `--rerender FILE.json` redraws the markdown from stored scores.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import SamplerConfig
from ..consistency import EVALUATOR_VERSION, detect, evaluate_video, whole_match
from ..loading import DEFAULT_MODEL
from ..prompt import SceneSpec, parse
from .model import rollout
from .tables import file_labels, file_lines, paired_file_lines, table_head, weights_record
from .validation import validation_pairs

LEVELS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.2)  # asked-for start levels; each runs from the schedule's next level down
SCORES = ("whole", "adherence", "extra_objects")
REFERENCES = ("ground truth", "autoencoder reconstruction")


def frame_scores(frame: np.ndarray, spec: SceneSpec) -> dict:
    """The three scores of one uint8 (S, S, 3) frame for its prompt."""
    dets = detect(frame)
    fixed = {c for c, _ in spec.objects if c is not None}
    whole = sum(any(whole_match(d, colour, shape, fixed) for d in dets) for colour, shape in spec.objects)
    ev = evaluate_video(frame[None], spec)
    return {"whole": whole / len(spec.objects), "adherence": ev["adherence"], "extra_objects": ev["extra_objects"]}


def start_levels(t0: float, cfg: SamplerConfig = SamplerConfig()) -> list[float]:
    """The first chunk's noise levels from the first one at or below t0 down (never empty)."""
    from ..flow import timesteps

    ts = timesteps(cfg, first_chunk=True).tolist()
    return [t for t in ts if t <= t0 + 1e-9] or ts[-1:]


def from_ground_truth(model, ae, spec: SceneSpec, z, seed: int, t0: float) -> np.ndarray:
    """Frame 0 denoised, unguided, from the ground-truth latent z (1, C, g, g) noised to the schedule's level at
    or below t0 -> uint8 (S, S, 3)."""
    import torch

    from ..autoencoder import tensor_to_frames
    from ..cache import KVCache
    from ..flow import step as flow_step

    cfg = model.geometry
    cache = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
    model.prefill(torch.tensor(spec.tokens()), cache)
    ts = start_levels(t0)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    x = (1 - ts[0]) * z + ts[0] * eps
    for k, t in enumerate(ts):
        v = model.forward_chunk(x, torch.full((1,), t), 0, cache)
        x, x0 = flow_step(x, v, t, ts[k + 1] if k + 1 < len(ts) else 0.0, None, False)
    with torch.no_grad():
        return tensor_to_frames(ae.decode(x0))[0]


def _pair(job) -> dict:
    """All rows of one (weights, pair): {row label: scores}."""
    import torch

    from ..autoencoder import frames_to_tensor, tensor_to_frames
    from ..loading import student_and_ae
    from ..world import make_clip

    torch.set_num_threads(1)
    weights, prompt, seed, refs = job
    model, ae = student_and_ae(weights)
    spec = parse(prompt)
    gt = make_clip(spec, seed, 1).frames[0]
    with torch.no_grad():
        z = ae.encode(frames_to_tensor(gt[None]))
        recon = tensor_to_frames(ae.decode(z))[0]
    out = {"generated (shipped sampler)": frame_scores(rollout(prompt, seed, 1, weights=weights).frames[0], spec)}
    for t0 in LEVELS:
        out[f"from ground truth, t0 = {start_levels(t0)[0]:.2f}"] = frame_scores(
            from_ground_truth(model, ae, spec, z, seed % 2**31, t0), spec
        )
    if refs:
        out |= dict(zip(REFERENCES, (frame_scores(gt, spec), frame_scores(recon, spec))))
    return out


def run(paths: list[str] | None = None, n: int = 48, workers: int = 2, out: str = "docs/decisions") -> dict:
    """Score every (weights file, validation pair) and write first_frame.{json,md} to out; -> the stored doc."""
    paths = [str(p) for p in (paths or [DEFAULT_MODEL])]
    pairs = validation_pairs(n)
    jobs = [(p, prompt, seed, i == 0) for i, p in enumerate(paths) for prompt, seed in pairs]
    with mp.get_context("spawn").Pool(workers) as pool:
        res = list(tqdm(pool.imap(_pair, jobs), total=len(jobs), desc="first frames"))
    per = {p: res[i * n : (i + 1) * n] for i, p in enumerate(paths)}
    refs = [{k: r.pop(k) for k in REFERENCES} for r in per[paths[0]]]  # no model in them
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "pairs": n,
        "evaluator": EVALUATOR_VERSION,
        "references": refs,
        "results": {p: {**weights_record(p), "per_pair": per[p]} for p in paths},
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "first_frame.json").write_text(json.dumps(doc, indent=1))
    rerender(Path(out) / "first_frame.json")
    return doc


def rerender(json_path) -> str:
    """first_frame.md beside a stored first_frame.json, from the stored scores alone (no weights needed);
    -> the markdown, also printed."""
    json_path = Path(json_path)
    md = "\n".join(report(json.loads(json_path.read_text()))) + "\n"
    json_path.with_suffix(".md").write_text(md)
    print(md)
    return md


def report(doc: dict) -> list[str]:
    """The markdown lines of a stored doc: mean ± CI per (weights, row), then paired differences of every further
    weights file against the first one."""
    n, per = doc["pairs"], {p: r["per_pair"] for p, r in doc["results"].items()}
    paths = list(per)
    label = file_labels(doc)
    groups = {"(no model)": doc["references"]} | {label[p]: rs for p, rs in per.items()}
    lines = [
        "# The first frame: generated, and denoised from the re-noised ground truth",
        "",
        f"{doc.get('date', 'undated')}: {n} validation pairs (training distribution, not the held-out set), "
        f"evaluator version {doc['evaluator']}; mean ± 95% CI over pairs. How the rows are made and what the "
        "scores mean: `backend/bench/first.py`.",
        "",
        *table_head("weights", "frame 0", SCORES),
    ]
    for name, rs in groups.items():
        lines += file_lines(name, rs, list(rs[0]), SCORES)
    if len(paths) > 1:
        lines += [
            "",
            f"Paired differences, each file minus {label[paths[0]]} on the same pairs and noise (mean ± 95% CI "
            "over pairs; ▲ / ▼: the CI excludes 0; for extra_objects lower is better):",
            "",
            *table_head("weights", "frame 0", SCORES),
        ]
        for p in paths[1:]:
            lines += paired_file_lines(label[p], per[p], per[paths[0]], list(per[p][0]), SCORES)
    return lines
