"""Safetensors checkpoints with their config in the header; clear errors for missing or corrupt files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def save(path: str | Path, module: torch.nn.Module, config, extra: dict | None = None) -> None:
    """Write module weights + config (+ extra JSON, e.g. the training step) atomically."""
    meta = {
        "config": json.dumps(dataclasses.asdict(config)),
        "class": type(config).__name__,
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read(path: str | Path) -> tuple[dict, dict, dict]:
    """(tensors, config dict, extra dict) from a safetensors checkpoint; raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not one of ours ({type(e).__name__}: {e})") from e
    return tensors, config, extra


def load_into(module: torch.nn.Module, tensors: dict, path: str | Path = "") -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {e}") from e


def config_from(cls, d: dict):
    """Rebuild a frozen config dataclass from JSON (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})
