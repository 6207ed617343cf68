"""Stages `teacher` and `student`: the bidirectional teacher, then the chunk-causal student.

CausVid's recipe (arXiv 2412.07772): train a bidirectional teacher, initialise the causal student from it,
train the student with teacher forcing (every noisy chunk attends to *clean* earlier chunks, exactly as
cached inference does; see ``model.teacher_forcing_mask``) plus noise on the context frames (reduces
exposure bias). Optionally, scheduled sampling on the model's own outputs (``rollout_context``): the context
frames are replaced by what the student itself generates from them, so it learns to continue (and correct)
imperfect context as at inference. Windowed context (``p_window``): on a share of the steps every frame
sees only the prompt, a few sink frames and the newest W frames, exactly what a sink/window cache holds
(LongLive, arXiv 2509.22622, trains with short-window attention plus a frame sink for the same reason), so
the student learns to continue when the frames that showed an object have been evicted. Temporal-position
augmentation (a random offset on the frame positions) shows the model
positions beyond the clip length, so a full cache degrades later past the trained horizon.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import checkpoint
from ..config import MODEL_PRESETS
from ..data import clip_batch, shape_pairs
from ..models.dit import VideoDiT
from .common import (
    MODELS,
    RUNS,
    Log,
    export,
    load_state,
    optimise,
    recipe_config,
    save_state,
    stage_autoencoder,
    trained_seconds,
)
from .losses import (  # noqa: F401  (re-exported: the training tests import them from here)
    context_window,
    encode_clips,
    first_chunk_loss,
    next_frame_error,
    rollout_context,
    student_loss,
    teacher_loss,
    token_weights,
)


@dataclass(frozen=True)
class VideoTrainConfig:
    preset: str = "default"
    steps: int = 2000
    batch: int = 8
    frames: int = 8  # clip length in frames
    long_frames: int = 24  # every `long_every` steps clips this long (occlusion + return)
    long_every: int = 4
    long_batch: int = 2
    lr: float = 1e-3
    warmup: int = 100
    shift: float = 2.0
    p_clean_prefix: float = 0.5  # teacher: share of clips whose first frames are clean (prediction mode)
    ctx_noise: float = 0.1  # student: max noise level on clean context frames
    p_ctx_noise: float = 0.5
    max_t_offset: int = 96  # temporal-position augmentation
    p_t_offset: float = 0.5
    sprite_weight: float = 1.0  # student: loss weight of tokens a sprite touches (others 1; see data.py)
    first_weight: float = 1.0  # student: loss weight of frame 0 (prompt only, no context)
    p_rollout: float = 0.0  # student: share of steps whose context is the model's own rollout
    rollout_rounds: int = 2  # parallel rollout depth (errors compound over this many frames)
    rollout_steps: int = 2  # sampler steps per generated frame in the rollout
    rollout_anchor: int = 1  # leading frames kept as ground truth in a rollout context
    p_window: float = 0.0  # student: share of steps whose context is a sink + window cache
    window_min: int = 4  # window length drawn from [window_min, min(window_max, T - 2)] chunks
    window_max: int = 16
    max_sink: int = 1  # sink chunks drawn from [0, max_sink]
    first_batch: int = 0  # student: extra clips per step of the first chunk alone (generation from the prompt)
    pixel_weight: float = 0.0  # student: weight of the first chunks' decoded pixel loss (losses.pixel_loss)
    shape_contrast: float = 0.0  # student: first chunks drawn as shape-swapped pairs, losses.shape_contrast's weight
    contrast_shared: bool = False  # the contrast between both prompts on one noisy input (else each row's own)
    contrast_min_t: float = 0.0  # with contrast_shared: noise levels scored from here up
    seed: int = 0
    ckpt_every: int = 100


RECIPES = {
    "teacher": {
        "quick": VideoTrainConfig(steps=200, frames=12, long_every=0),
        "default": VideoTrainConfig(steps=600, frames=12, long_every=0),
        # continuation (start it with --init, e.g. from the shipped student): 24-frame clips with an
        # occlusion and a return every other step, sprite-weighted loss, so the teacher whose
        # attention labels PaFu-KV's head has learned to use its context at the labels' clip length
        "long": VideoTrainConfig(
            steps=2500, lr=3e-4, warmup=50, frames=12, long_every=2, long_batch=3, sprite_weight=5.0
        ),
        # frame 0 alone, from scratch (bidirectional over one frame = the student's first chunk): how fast a model
        # learns to draw what the prompt names, the learnability probe of the binding diagnosis (8x8 against
        # 16x16 latents, docs/decisions/binding_factored/)
        "frame0": VideoTrainConfig(
            steps=1200, batch=32, frames=1, long_every=0, p_clean_prefix=0.0, p_t_offset=0.0, sprite_weight=5.0
        ),
        # the same continuation sized for a GPU (run it time-boxed with --device cuda --minutes M)
        "gpu": VideoTrainConfig(
            steps=20000,
            lr=3e-4,
            warmup=100,
            batch=48,
            frames=12,
            long_every=2,
            long_frames=32,
            long_batch=12,
            sprite_weight=5.0,
            max_t_offset=224,
            ckpt_every=500,
        ),
    },
    "student": {
        "quick": VideoTrainConfig(steps=1200, lr=5e-4, sprite_weight=5.0, first_weight=2.0),
        "default": VideoTrainConfig(steps=4000, lr=5e-4, sprite_weight=5.0, first_weight=2.0),
        # continuation from the shipped student: own-rollout context, more long clips
        "selfctx": VideoTrainConfig(
            steps=2500,
            lr=3e-4,
            warmup=50,
            batch=4,
            frames=16,
            long_every=2,
            long_batch=3,
            sprite_weight=5.0,
            first_weight=2.0,
            p_rollout=0.5,
        ),
        # selfctx sized for a GPU: 12x the clips per step, 32-frame long clips, depth-3 rollouts,
        # positions offset up to 224 so a full cache meets trained positions out to 256 frames
        "gpu": VideoTrainConfig(
            steps=20000,
            lr=3e-4,
            warmup=100,
            batch=48,
            frames=16,
            long_every=2,
            long_frames=32,
            long_batch=16,
            sprite_weight=5.0,
            first_weight=2.0,
            p_rollout=0.5,
            rollout_rounds=3,
            max_t_offset=224,
            ckpt_every=500,
        ),
        # gpu plus windowed context on a third of the steps and 48-frame long clips, so bounded
        # caches (window, sink, every evicting policy) meet contexts the student was trained on
        "gpuwin": VideoTrainConfig(
            steps=20000,
            lr=3e-4,
            warmup=100,
            batch=48,
            frames=16,
            long_every=2,
            long_frames=48,
            long_batch=12,
            sprite_weight=5.0,
            first_weight=2.0,
            p_rollout=0.5,
            rollout_rounds=3,
            max_t_offset=224,
            p_window=0.33,
            ckpt_every=500,
        ),
        # CPU continuation of the shipped student that drills the first chunk (prompt-only generation,
        # where validation prompts showed most extra objects) with 48 first chunks per step beside
        # gpuwin-like clips (own-rollout context on a quarter, windowed context on a third)
        "first": VideoTrainConfig(
            steps=1500,
            lr=1e-4,
            warmup=50,
            batch=4,
            frames=16,
            long_every=4,
            long_batch=3,
            sprite_weight=5.0,
            first_weight=2.0,
            p_rollout=0.25,
            max_t_offset=224,
            p_window=0.33,
            first_batch=48,
        ),
    },
}
# gpuwin plus 192 first chunks per step: the `first` drill sized for a GPU (not yet run; the next GPU session's
# first candidate, see docs/backend.md "Where the student fails")
RECIPES["student"]["gpufirst"] = dataclasses.replace(RECIPES["student"]["gpuwin"], first_batch=192)
# the short paired runs of the binding diagnosis (docs/decisions/binding_factored/): a CPU continuation whose
# steps are mostly first chunks (where the shape word must steer the drawing: nothing else says what to draw)
# beside two short clips, so the rest of the model keeps its context behaviour; run it time-boxed (--minutes)
RECIPES["student"]["bind"] = VideoTrainConfig(
    steps=3000,
    lr=3e-4,
    warmup=50,
    batch=2,
    frames=8,
    long_every=0,
    sprite_weight=5.0,
    first_weight=2.0,
    max_t_offset=224,
    first_batch=64,
)
# bind plus the decoded pixel loss on the first chunks (losses.pixel_loss), the third arm of the paired runs; the
# weight puts the pixel term at 0.2-1.4 against 0.6-1.0 of the latent one for the shipped student (t = 0.2-0.8)
RECIPES["student"]["bindpix"] = dataclasses.replace(RECIPES["student"]["bind"], pixel_weight=10.0)
# bind with its 64 first chunks drawn as 32 shape-swapped pairs and the pairs' contrast loss (losses.shape_contrast):
# the same rows per step, so the same compute as bind (docs/decisions/binding_contrast/)
RECIPES["student"]["bindcf"] = dataclasses.replace(RECIPES["student"]["bind"], shape_contrast=1.0)
# bindcf's contrast between the two prompts on the original's noisy input at t >= 0.5 (one extra pass over those
# rows): bindcf's pairs differ in their inputs too, and the model met that contrast from its input
RECIPES["student"]["bindcfx"] = dataclasses.replace(
    RECIPES["student"]["bindcf"], contrast_shared=True, contrast_min_t=0.5
)


class ClipStream(torch.utils.data.IterableDataset):
    """Endless training batches (frames uint8 (B, T, S, S, 3), prompt tokens (B, P), sprite masks (B, T, g, g))
    drawn from the procedural world; T and B alternate between the recipe's short and long clips.

    With W loader workers, worker w draws the batches of steps start + w, start + w + W, ... (the loader
    hands them out round-robin, so the step order is kept and short/long clips alternate as the recipe
    says); each worker has its own seeded generator, so a run is reproducible for a given W."""

    def __init__(self, cfg: VideoTrainConfig, grid: int, start: int, chunk: int = 1):
        self.cfg, self.grid, self.start, self.chunk = cfg, grid, start, chunk

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.cfg.seed, self.start, wid, 17])
        cfg, step = self.cfg, self.start + wid
        while True:
            long = cfg.long_every and step % cfg.long_every == cfg.long_every - 1
            T, B = (cfg.long_frames, cfg.long_batch) if long else (cfg.frames, cfg.batch)
            batch = clip_batch(rng, B, T, mask_grid=self.grid)
            if cfg.first_batch and cfg.shape_contrast:  # first chunks as counterfactual pairs (first_batch rows)
                batch += shape_pairs(rng, cfg.first_batch // 2, self.chunk, self.grid)
            elif cfg.first_batch:  # first chunks alone (first_chunk_loss)
                batch += clip_batch(rng, cfg.first_batch, self.chunk, mask_grid=self.grid)
            yield tuple(torch.from_numpy(a) for a in batch)
            step += n


def run(
    stage: str = "teacher",
    recipe: str = "quick",
    resume: bool = True,
    steps: int | None = None,
    preset: str | None = None,
    runs: Path = RUNS,
    models: Path = MODELS,
    init: str | None = None,
    device: str = "cpu",
    workers: int = 0,
    minutes: float | None = None,
    batch: int | None = None,
    long_batch: int | None = None,
    amp: bool = False,
    seed: int | None = None,
) -> dict:
    """Train `stage`. On a GPU (`device="cuda"`), `workers` loader processes draw the clips and `batch` /
    `long_batch` override the recipe's; `minutes` caps the wall time: the cosine schedule then runs on
    max(step / steps, elapsed / minutes), so a time-boxed run still anneals to zero. `amp` computes the
    model's forward and backward passes in bfloat16 autocast (weights, optimiser and the autoencoder's
    latent targets stay fp32); it is for GPUs, whose tensor cores run bf16 at many times the fp32 rate."""
    cfg = recipe_config(
        RECIPES[stage], recipe, steps=steps, preset=preset, batch=batch, long_batch=long_batch, seed=seed
    )
    runs, models, dev = Path(runs), Path(models), torch.device(device)
    torch.manual_seed(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    ae = stage_autoencoder(models).to(dev).requires_grad_(False)  # frozen: targets and the pixel loss's decoder
    mcfg = MODEL_PRESETS[cfg.preset]
    model = VideoDiT(mcfg)
    state = runs / stage / "state.safetensors"
    if init is not None and not (resume and state.is_file()):  # continue from shipped weights
        init_from(model, init)
        print(f"{stage} initialised from {init}")
    elif stage == "student" and not (resume and state.is_file()):
        teacher = models / "teacher.safetensors"
        if teacher.is_file():
            tensors, _, _ = checkpoint.read(teacher)
            checkpoint.load_into(model, tensors, teacher)
            print(f"student initialised from {teacher}")
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    step = load_state(state, model, opt) if resume else 0
    log = Log(runs / stage / "log.jsonl")
    rng = np.random.default_rng([cfg.seed, step, 17])
    loss_fn = teacher_loss if stage == "teacher" else student_loss
    stream = iter(
        torch.utils.data.DataLoader(
            ClipStream(cfg, mcfg.grid, step, mcfg.chunk_frames),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            persistent_workers=bool(workers),
        )
    )
    bar = tqdm(range(step, cfg.steps), desc=stage, initial=step, total=cfg.steps)
    ema, t0, done, start = None, time.time(), step, step
    spent = trained_seconds(state) if step else 0.0  # training seconds before this call

    def clock() -> float:
        return spent + time.time() - t0

    for step in bar:
        frac = step / cfg.steps if minutes is None else max(step / cfg.steps, clock() / (60 * minutes))
        if frac >= 1.0:
            break
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.5 + 0.5 * np.cos(np.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        frames, tokens, mask, *first = next(stream)
        T = frames.shape[1]
        x0 = encode_clips(ae, frames.to(dev))  # fp32 targets, also under amp
        x0_first = encode_clips(ae, first[0].to(dev)) if first else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, tokens.to(dev), x0, cfg, rng, mask.to(dev))
            if first:  # student with first_batch > 0
                loss = loss + first_chunk_loss(
                    model, first[1].to(dev), x0_first, cfg, first[2].to(dev), ae, first[0].to(dev)
                )
        optimise(loss, opt, model.parameters())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
        done = step + 1
        if done % 25 == 0:
            log.write(step=done, loss=loss.item(), loss_ema=ema, lr=lr, T=T)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            checkpoint_run(stage, recipe, model, opt, ae, mcfg, cfg, state, log, models, done, clock())
    if done > start and done % cfg.ckpt_every and done != cfg.steps:  # a time-boxed run stopped between saves
        checkpoint_run(stage, recipe, model, opt, ae, mcfg, cfg, state, log, models, done, clock())
    secs = time.time() - t0
    print(
        f"{stage}: {done} steps in {secs:.0f} s ({(done - start) / max(secs, 1e-9):.2f} steps/s this run) "
        f"-> {models / f'{stage}.safetensors'}"
    )
    return {"steps": done}


# parameters a preset adds on top of a checkpoint it may continue from, zero-initialised so the continued model
# starts where the checkpoint was (`ModelConfig.prompt_factors`)
EXTENSIONS = ("colour_emb.weight", "shape_emb.weight")


def init_from(model: VideoDiT, path) -> None:
    """Load `path` into `model`; the model's own (zero) extension parameters stand in for those the file lacks."""
    tensors, _, _ = checkpoint.read(path)
    own = model.state_dict()
    tensors = {**{k: own[k] for k in EXTENSIONS if k in own and k not in tensors}, **tensors}
    checkpoint.load_into(model, tensors, path)


def checkpoint_run(stage, recipe, model, opt, ae, mcfg, cfg, state, log, models, done: int, elapsed_s: float) -> None:
    """Resumable state, the health check and the exported weights (always written from CPU tensors)."""
    save_state(state, model, opt, done, dataclasses.asdict(cfg), elapsed_s)
    model.eval()
    health = next_frame_error(model, ae, stage)
    model.train()
    log.write(step=done, **health)
    export(models / f"{stage}.safetensors", model, mcfg, {"stage": stage, "recipe": recipe, "steps": done, **health})
