"""Stage `ae`: train the frame autoencoder on world frames, then measure latent statistics and PSNR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..autoencoder import AE_PRESETS, AutoEncoder, frames_to_tensor
from ..data import clip_batch
from ..evalset import EVAL_PAIRS
from ..metrics import psnr
from ..prompt import parse
from ..world import make_clip
from .common import MODELS, RUNS, Log, export, frame_batch, load_state, optimise, recipe_config, save_state


@dataclass(frozen=True)
class AETrainConfig:
    steps: int = 3000
    clips: int = 6  # clips per batch
    frames: int = 8  # frames per clip
    lr: float = 1e-3
    seed: int = 0
    ckpt_every: int = 250


RECIPES = {"quick": AETrainConfig(steps=600), "default": AETrainConfig(steps=2500)}


def heldout_frames(n_clips: int = 8, n_frames: int = 48) -> np.ndarray:
    """Frames from the held-out evaluation prompts/seeds, which training never draws."""
    out = [make_clip(parse(p), s, n_frames).frames[::6] for p, s in EVAL_PAIRS[:n_clips]]
    return np.concatenate(out)


@torch.no_grad()
def evaluate(ae: AutoEncoder) -> dict:
    x = frames_to_tensor(heldout_frames())
    rec = ae(x)
    return {"heldout_psnr_db": float(psnr(rec, x, data_range=2.0))}


@torch.no_grad()
def fit_latent_stats(ae: AutoEncoder, rng) -> None:
    frames, _ = clip_batch(rng, 32, 8)
    z = ae.encoder(frames_to_tensor(frames.reshape(-1, *frames.shape[2:])))  # (N, C, g, g)
    ae.lat_mean.copy_(z.mean(dim=(0, 2, 3)))
    ae.lat_std.copy_(z.std(dim=(0, 2, 3)).clamp_min(1e-3))


def run(
    recipe: str = "quick",
    resume: bool = True,
    steps: int | None = None,
    runs: Path = RUNS,
    models: Path = MODELS,
    preset: str | None = None,
) -> dict:
    """Train the autoencoder of `preset` (AE_PRESETS, default `default`)."""
    cfg = recipe_config(RECIPES, recipe, steps=steps)
    runs, models = Path(runs), Path(models)
    preset = preset or "default"
    if preset not in AE_PRESETS:
        raise KeyError(f"unknown autoencoder preset {preset!r}; known: {', '.join(AE_PRESETS)}")
    ae = AutoEncoder(AE_PRESETS[preset])
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    state = runs / "ae" / "state.safetensors"
    step = load_state(state, ae, opt) if resume else 0
    log = Log(runs / "ae" / "log.jsonl")
    rng = np.random.default_rng([cfg.seed, step])
    bar = tqdm(range(step, cfg.steps), desc="ae", initial=step, total=cfg.steps)
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = frame_batch(rng, cfg.clips, cfg.frames)
        rec = ae.decoder(ae.encoder(x))
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)  # L1 keeps small high-contrast details (landmarks)
        optimise(loss, opt, ae.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log.write(step=step + 1, loss=loss.item(), lr=lr)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            save_state(state, ae, opt, step + 1, dataclasses.asdict(cfg))
    fit_latent_stats(ae, np.random.default_rng(123))
    metrics = evaluate(ae)
    log.write(step=cfg.steps, **metrics)
    export(models / "autoencoder.safetensors", ae, ae.cfg, {"recipe": recipe, "steps": cfg.steps, **metrics})
    print(f"autoencoder: held-out PSNR {metrics['heldout_psnr_db']:.2f} dB -> {models / 'autoencoder.safetensors'}")
    return metrics
