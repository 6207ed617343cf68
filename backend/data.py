"""Training batches drawn on the fly from the procedural world (never from the held-out eval set)."""
from __future__ import annotations

import numpy as np

from .evalset import EVAL_PROMPTS, EVAL_SEED_BASE
from .prompt import SceneSpec
from .world import WorldConfig, make_clip, sample_spec


def sample_train_scene(rng: np.random.Generator) -> tuple[SceneSpec, int]:
    """A random (spec, seed) for training; held-out prompts are redrawn, seeds stay below the eval range."""
    while True:
        spec = sample_spec(rng)
        if spec.text() not in EVAL_PROMPTS:
            return spec, int(rng.integers(0, EVAL_SEED_BASE))


def clip_batch(rng: np.random.Generator, batch: int, n_frames: int, cfg: WorldConfig = WorldConfig(),
               max_start: int = 0):
    """uint8 frames [B, T, S, S, 3] and prompt tokens [B, P]; clips start at a random frame < max_start."""
    frames, tokens = [], []
    for _ in range(batch):
        spec, seed = sample_train_scene(rng)
        start = int(rng.integers(0, max_start + 1))
        clip = make_clip(spec, seed, start + n_frames, cfg)
        frames.append(clip.frames[start:])
        tokens.append(spec.tokens())
    return np.stack(frames), np.array(tokens, np.int64)
