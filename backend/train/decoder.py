"""Stage `decoder`: fine-tune the autoencoder's decoder with the encoder frozen.

The latent space (and so every video model trained on it) stays valid: only the pixels a latent decodes
to get sharper. Light noise on the latents (sigma 0.05, latent units) makes the decoder robust to the
imperfect latents a video model generates.

Sprites are a few percent of the pixels and their shapes live in a few of them (a square's corners, a
triangle's apex): with `sprite_weight` > 0 the loss weights pixels near a sprite colour in the target frame,
dilated by one pixel so the sprite's edge counts too, by 1 + sprite_weight (the same idea as the video
models' sprite-weighted token loss; the weight and the dilation are ours).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..consistency import COLOUR_TOL
from ..world import SPRITE_RGB
from .ae import evaluate
from .common import (
    MODELS,
    RUNS,
    Log,
    export,
    frame_batch,
    load_state,
    optimise,
    recipe_config,
    save_state,
    stage_autoencoder,
)


@dataclass(frozen=True)
class DecoderTrainConfig:
    steps: int = 1500
    clips: int = 6
    frames: int = 8
    lr: float = 5e-4
    latent_noise: float = 0.05
    sprite_weight: float = 0.0  # extra loss weight of pixels near a sprite colour (0: plain loss)
    seed: int = 1
    ckpt_every: int = 250


RECIPES = {
    "quick": DecoderTrainConfig(steps=300),
    "default": DecoderTrainConfig(steps=1500),
    "sharp": DecoderTrainConfig(steps=3000, lr=3e-4, sprite_weight=4.0),
}


def sprite_pixels(x: torch.Tensor, tol: int = COLOUR_TOL) -> torch.Tensor:
    """Frames x (N, 3, S, S) in [-1, 1] -> float (N, 1, S, S): 1 where a pixel, or one of its 8 neighbours, is
    within `tol` (L-inf, 0-255) of a sprite colour (the evaluator's colour test), else 0."""
    rgb = (x + 1) * 127.5  # (N, 3, S, S) in 0-255
    cols = torch.tensor(list(SPRITE_RGB.values()), dtype=x.dtype, device=x.device)  # (K, 3)
    near = ((rgb[:, None] - cols[None, :, :, None, None]).abs().amax(2) < tol).any(1, keepdim=True)
    return F.max_pool2d(near.to(x.dtype), 3, stride=1, padding=1)


def run(
    recipe: str = "quick", resume: bool = True, steps: int | None = None, runs: Path = RUNS, models: Path = MODELS
) -> dict:
    cfg = recipe_config(RECIPES, recipe, steps=steps)
    runs, models = Path(runs), Path(models)
    ae = stage_autoencoder(models)
    ae.requires_grad_(False)
    ae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    state = runs / "decoder" / "state.safetensors"
    step = load_state(state, ae, opt) if resume else 0
    log = Log(runs / "decoder" / "log.jsonl")
    rng = np.random.default_rng([cfg.seed, step])
    ae.train()
    bar = tqdm(range(step, cfg.steps), desc="decoder", initial=step, total=cfg.steps)
    for step in bar:
        lr = cfg.lr * (0.1 + 0.9 * (1 - step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = frame_batch(rng, cfg.clips, cfg.frames)
        with torch.no_grad():
            z = ae.encode(x)
            z = z + cfg.latent_noise * torch.randn_like(z)
        rec = ae.decode(z)
        w = 1 + cfg.sprite_weight * sprite_pixels(x)  # (N, 1, S, S)
        loss = (w * ((rec - x) ** 2 + 0.5 * (rec - x).abs())).mean() / w.mean()
        optimise(loss, opt, ae.decoder.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log.write(step=step + 1, loss=loss.item(), lr=lr)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            save_state(state, ae, opt, step + 1, dataclasses.asdict(cfg))
    ae.eval()
    metrics = evaluate(ae)
    log.write(step=cfg.steps, **metrics)
    export(models / "autoencoder.safetensors", ae, ae.cfg, {"recipe": recipe, "decoder_steps": cfg.steps, **metrics})
    print(f"decoder: held-out PSNR {metrics['heldout_psnr_db']:.2f} dB -> {models / 'autoencoder.safetensors'}")
    return metrics
