"""Few-step flow-matching sampler (rectified flow, v-prediction), kept apart from the model (DiT style).

x_t = (1 - t) x0 + t eps; the model predicts v = eps - x0, so x0 = x_t - t v.
Default: 4 steps, each predicting x0 and re-noising it to the next level with fresh noise (the
Self-Forcing / CausVid few-step loop); ``renoise=False`` gives plain Euler ODE steps instead.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import SamplerConfig
from .settings import parse_params


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift s*t / (1 + (s - 1) t): more time at high noise (SD3 / Wan)."""
    return shift * t / (1 + (shift - 1) * t)


def timesteps(cfg: SamplerConfig, first_chunk: bool = False) -> torch.Tensor:
    """Noise levels visited by the sampler, from 1 down (excluding 0): (steps,)."""
    n = cfg.first_steps if first_chunk and cfg.first_steps else cfg.steps
    return shift_t(torch.linspace(1.0, 0.0, n + 1)[:-1], cfg.shift)


def step(
    x_t: torch.Tensor, v: torch.Tensor, t: float, t_next: float, noise: torch.Tensor | None, renoise: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampler step -> (x at level t_next, current x0 estimate)."""
    x0 = x_t - t * v
    if t_next <= 0:
        return x0, x0
    if renoise:
        return (1 - t_next) * x0 + t_next * noise, x0
    return x_t + (t_next - t) * v, x0


def sampler_config(items: list[str] | None, base: dict | None = None):
    """--sampler KEY=VALUE pairs over `base` (default: SamplerConfig's defaults) -> SamplerConfig (unknown keys
    rejected with the list of known ones)."""
    kw = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--sampler expects KEY=VALUE, got {item!r}")
        kw.update(parse_params(item))
    known = {f.name for f in dataclasses.fields(SamplerConfig)}
    bad = sorted(set(kw) - known)
    if bad:
        raise ValueError(f"unknown sampler setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    kw = {k: (None if v == "none" else v) for k, v in kw.items()}
    return SamplerConfig(**{**(base or {}), **kw})
