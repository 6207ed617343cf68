"""Training batches drawn on the fly from the procedural world (never from the held-out eval set)."""

from __future__ import annotations

import numpy as np

from .evalset import EVAL_PROMPTS, EVAL_SEED_BASE
from .prompt import SceneSpec
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
