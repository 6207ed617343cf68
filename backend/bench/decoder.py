"""`python -m backend.bench decoder AE.safetensors [AE2.safetensors ...]`: which autoencoder ships.

A decoder fine-tune (`python -m backend.train decoder`) freezes the encoder, so the latent space, and every
model trained on it, stays the same: candidates differ only in the pixels they draw from the same latents.
So each validation pair (training distribution, never the held-out set) is generated once, by the shipped
student with the shipped sampler (full cache and window(16), `frames` frames), and its latents are decoded
by every candidate; the ground-truth clip is encoded once and decoded by every candidate too (the ceiling:
what a student whose latents were perfect would score). Differences between candidates are therefore paired
with no sampling noise at all. Rows, scored by the evaluator: ground truth through the autoencoder (all
frames), full cache frames 0-47 and all, window(16) all; plus the reconstruction PSNR of the ground truth.
Writes docs/results/decoder_validation.{md,json}.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import time
from pathlib import Path

from tqdm import tqdm

from ..consistency import EVALUATOR_VERSION
from ..loading import file_hash
from .model import SCORES, TRAIN_CLIP, rollout, score
from .report import mean_ci
from .tables import file_labels, file_lines, paired_file_lines, table_head
from .validation import validation_pairs

ROWS = (
    "ground truth, encoded and decoded",
    "full cache, frames 0-47",
    "full cache, all frames",
    "window 16, all frames",
)
PAIRED = ("adherence", "frames_all_found", "identity_persistence", "landmark_revisit", "extra_objects")


@functools.cache
def _autoencoder(path: str):
    from ..loading import load_autoencoder

    return load_autoencoder(path)


def _pair(job) -> dict:
    """One validation pair decoded by every candidate: {ae path: {row: scores} | {"psnr_db": float}}."""
    import torch

    from ..autoencoder import frames_to_tensor, tensor_to_frames
    from ..loading import shipped
    from ..metrics import psnr
    from ..policies import make_policy
    from ..prompt import parse
    from ..world import make_clip

    torch.set_num_threads(1)
    paths, prompt, seed, frames = job
    _, ae = shipped()
    latents = {
        name: rollout(prompt, seed, frames, policy).latents  # (T, C, g, g)
        for name, policy in (("full", make_policy("full")), ("window", make_policy("window", frames=16)))
    }
    gt = make_clip(parse(prompt), seed, frames).frames  # (T, S, S, 3) uint8
    out = {}
    with torch.no_grad():
        x = frames_to_tensor(gt)  # (T, 3, S, S) in [-1, 1]
        latents["truth"] = ae.encode(x)  # the encoder is shared by all
        for p in paths:
            dec = {k: tensor_to_frames(_autoencoder(p).decode(z)) for k, z in latents.items()}
            out[p] = dict(
                zip(
                    ROWS,
                    (
                        score(dec["truth"], prompt),
                        score(dec["full"][: 2 * TRAIN_CLIP], prompt),
                        score(dec["full"], prompt),
                        score(dec["window"], prompt),
                    ),
                )
            )
            out[p]["psnr_db"] = float(psnr(frames_to_tensor(dec["truth"]), x, data_range=2.0))
    return out


def check_autoencoders(paths: list[str]) -> None:
    """Every candidate exists, once, and shares the first one's encoder (else the latents are not the same)."""
    from .weights import check_paths

    check_paths(paths)
    from ..checkpoint import read

    enc = {k: v for k, v in read(paths[0])[0].items() if not k.startswith("decoder.")}
    for p in paths[1:]:
        other = read(p)[0]
        if any(k not in other or not (other[k] == v).all() for k, v in enc.items()):
            raise ValueError(
                f"{p} has another encoder than {paths[0]}: only decoders can be compared on the same latents"
            )


def run(paths: list[str], n: int = 24, frames: int = 96, workers: int = 2, out: str = "docs/decisions") -> dict:
    check_autoencoders(paths)
    jobs = [(tuple(paths), prompt, seed, frames) for prompt, seed in validation_pairs(n)]
    with mp.get_context("spawn").Pool(workers) as pool:
        per_pair = list(tqdm(pool.imap(_pair, jobs), total=n, desc="decoders"))
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "pairs": n,
        "frames": frames,
        "evaluator": EVALUATOR_VERSION,
        "results": {p: {"sha256": file_hash(p), "per_pair": [r[p] for r in per_pair]} for p in paths},
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "decoder_validation.json").write_text(json.dumps(doc, indent=1))
    lines = report(doc)
    (Path(out) / "decoder_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return doc


def report(doc: dict) -> list[str]:
    """Markdown: mean ± 95% CI per (candidate, row), then each further candidate minus the first, per pair."""
    res = {p: r["per_pair"] for p, r in doc["results"].items()}
    paths = list(res)
    label = file_labels(doc)
    lines = [
        "# Autoencoder decoders on the same latents (validation prompts, not the held-out set)",
        "",
        f"{doc['date']}: {doc['pairs']} pairs x {doc['frames']} frames, generated once by the shipped student "
        f"(shipped sampler) and decoded by each candidate; evaluator version {doc['evaluator']}; mean ± 95% CI "
        "over pairs. How the rows are made: `backend/bench/decoder.py`.",
        "",
        *table_head("decoder", "row", SCORES),
    ]
    for p, rs in res.items():
        lines += file_lines(label[p], rs, ROWS, SCORES)
        m, c = mean_ci([r["psnr_db"] for r in rs])
        lines.append(
            f"| {label[p]} | ground truth reconstruction PSNR | {m:.2f} ± {c:.2f} dB |" + " |" * (len(SCORES) - 1)
        )
    if len(paths) > 1:
        lines += [
            "",
            f"Paired differences, each decoder minus {label[paths[0]]} on the same latents (mean ± 95% CI "
            "over pairs where both are defined; ▲ / ▼: the CI excludes 0; for extra_objects lower is better):",
            "",
            *table_head("decoder", "row", PAIRED),
        ]
        for p in paths[1:]:
            lines += paired_file_lines(label[p], res[p], res[paths[0]], ROWS, PAIRED)
    return lines
