"""Shared training plumbing: run folders, resumable safetensors state, progress logs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import checkpoint
from ..atomic import atomic_path

RUNS = Path("runs")
MODELS = Path("assets/models")


def recipe_config(recipes: dict, recipe: str, **overrides):
    """The recipe's config with the non-None overrides (e.g. steps=..., preset=...) applied."""
    if recipe not in recipes:
        raise KeyError(f"unknown recipe {recipe!r}; known: {', '.join(recipes)}")
    return dataclasses.replace(recipes[recipe], **{k: v for k, v in overrides.items() if v is not None})


def stage_autoencoder(models: Path):
    """The autoencoder in a models folder, else the shipped one."""
    from ..loading import folder_autoencoder, load_autoencoder

    return load_autoencoder(folder_autoencoder(models))


def optimise(loss: torch.Tensor, opt: torch.optim.Optimizer, params, clip: float = 1.0) -> None:
    """One optimiser step with gradient-norm clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def frame_batch(rng, clips: int, frames: int, length: int = 48):
    """Random single frames from `clips` random training clips: float (clips * frames, 3, S, S)."""
    import numpy as np

    from ..autoencoder import frames_to_tensor
    from ..data import clip_batch

    video, _ = clip_batch(rng, clips, length)
    idx = rng.integers(0, length, size=(clips, frames))
    return frames_to_tensor(np.stack([f[i] for f, i in zip(video, idx)]).reshape(-1, *video.shape[2:]))


def set_threads() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))


def save_state(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, cfg, elapsed_s: float = 0.0
) -> None:
    """Resumable training state (weights + Adam moments + step + training seconds so far), as safetensors;
    never pickles."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    with atomic_path(path) as tmp:
        save_file(
            tensors, str(tmp), metadata={"step": str(step), "config": json.dumps(cfg), "elapsed_s": f"{elapsed_s:.3f}"}
        )


def load_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore a save_state file; returns the step to resume from (0 if there is none)."""
    if not path.is_file():
        return 0
    step = int(state_meta(path).get("step", 0))
    t = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, v in t.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            p = params[int(i)]
            opt.state[p][name] = v.to(p.device) if v.dim() else v  # Adam's step count stays a CPU scalar
    return step


def state_meta(path: Path) -> dict:
    """The metadata of a save_state file (step, config, elapsed_s), {} if there is none."""
    if not Path(path).is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def trained_seconds(path: Path) -> float:
    """Training seconds a save_state file records (0 if there is none, or it predates the field): a
    time-boxed run (`--minutes`) resumed after an interruption goes on with the time it has left, so its
    cosine schedule continues instead of starting over."""
    return float(state_meta(path).get("elapsed_s", 0.0))


class Log:
    """Appends JSON lines to runs/<stage>/log.jsonl with wall time, so progress survives restarts."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()

    def write(self, **kw) -> None:
        kw["wall_s"] = round(time.time() - self.t0, 1)
        with self.path.open("a") as f:
            f.write(json.dumps(kw) + "\n")


def export(path: Path, model: torch.nn.Module, cfg, extra: dict) -> None:
    """Write shipped weights (safetensors with config header)."""
    checkpoint.save(path, model, cfg, extra)
