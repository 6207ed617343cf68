"""Training batches drawn on the fly from the procedural world (never from the held-out eval set)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .evalset import EVAL_PROMPTS, EVAL_SEED_BASE
from .prompt import SHAPES, SceneSpec
from .world import Clip, WorldConfig, make_clip, sample_spec


def sample_train_scene(rng: np.random.Generator) -> tuple[SceneSpec, int]:
    """A random (spec, seed) for training; held-out prompts are redrawn, seeds stay below the eval range."""
    while True:
        spec = sample_spec(rng)
        if spec.text() not in EVAL_PROMPTS:
            return spec, int(rng.integers(0, EVAL_SEED_BASE))


def sprite_token_mask(clip: Clip, grid: int, margin: float = 2.0) -> np.ndarray:
    """Which latent tokens a visible sprite touches: float32 [T, grid, grid] in {0, 1}.

    A token (cell of S/grid px) is marked when its centre lies within the sprite radius + half a cell +
    `margin` px of a sprite centre that is at least partly visible. Used to weight the training loss
    towards the few tokens that carry the prompted objects."""
    S = clip.frames.shape[1]
    cell = S / grid
    centres = (np.arange(grid) + 0.5) * cell  # [g] px
    radii = np.array([sp.radius for sp in clip.scene.sprites], np.float32)  # [n]
    dx = centres[None, None, None, :] - clip.positions[:, :, 0, None, None]  # [T, n, 1, g]
    dy = centres[None, None, :, None] - clip.positions[:, :, 1, None, None]  # [T, n, g, 1]
    reach = (radii + cell / 2 + margin)[None, :, None, None]
    near = (dx * dx + dy * dy) <= reach * reach  # [T, n, g, g]
    near &= (clip.visibility > 0)[:, :, None, None]
    return near.any(axis=1).astype(np.float32)


def clip_batch(
    rng: np.random.Generator,
    batch: int,
    n_frames: int,
    cfg: WorldConfig = WorldConfig(),
    max_start: int = 0,
    mask_grid: int | None = None,
):
    """uint8 frames [B, T, S, S, 3] and prompt tokens [B, P]; clips start at a random frame < max_start.
    With `mask_grid`, also the sprite token masks [B, T, g, g] (see `sprite_token_mask`)."""
    frames, tokens, masks = [], [], []
    for _ in range(batch):
        spec, seed = sample_train_scene(rng)
        start = int(rng.integers(0, max_start + 1))
        clip = make_clip(spec, seed, start + n_frames, cfg)
        frames.append(clip.frames[start:])
        tokens.append(spec.tokens())
        if mask_grid:
            masks.append(sprite_token_mask(clip, mask_grid)[start:])
    out = np.stack(frames), np.array(tokens, np.int64)
    return (*out, np.stack(masks)) if mask_grid else out


def swap_shape(spec: SceneSpec, rng: np.random.Generator) -> SceneSpec:
    """The scene with one random object's shape replaced by another (the objects stay distinct); the world draws
    the same layout, colours, sizes and motion for it (the shape takes no draw), so the two clips differ only in
    that sprite's outline."""
    for i in rng.permutation(len(spec.objects)):
        colour, shape = spec.objects[int(i)]
        for new in rng.permutation([s for s in SHAPES if s != shape]):
            objects = spec.objects[: int(i)] + ((colour, str(new)),) + spec.objects[int(i) + 1 :]
            if len(set(objects)) == len(objects):
                return dataclasses.replace(spec, objects=objects)
    return spec


def shape_pairs(rng: np.random.Generator, pairs: int, n_frames: int, mask_grid: int):
    """Counterfactual pairs for the shape-contrast loss (losses.shape_contrast): uint8 frames [2P, T, S, S, 3],
    prompt tokens [2P, P_tok] and sprite token masks [2P, T, g, g], rows P + i the scene of row i with one object's
    shape swapped (swap_shape), same seed."""
    frames, tokens, masks = [], [], []
    scenes = [sample_train_scene(rng) for _ in range(pairs)]
    for spec, seed in scenes + [(swap_shape(sp, rng), sd) for sp, sd in scenes]:
        clip = make_clip(spec, seed, n_frames)
        frames.append(clip.frames)
        tokens.append(spec.tokens())
        masks.append(sprite_token_mask(clip, mask_grid))
    return np.stack(frames), np.array(tokens, np.int64), np.stack(masks)
