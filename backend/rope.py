"""3D rotary position embedding over (t, y, x), applied at attention time.

Keys are cached *un-rotated* with their (t, y, x) positions beside them, so a policy can keep positions
(absolute), shift them (Deep Forcing / Rolling Forcing sinks) or re-index them (Infinity-RoPE) and the
rotation is simply recomputed from the stored positions (RoPE rotations compose, so this is exact).
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def rope_angles(pos: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """pos [n, 3] (t, y, x) -> cos, sin [n, head_dim // 2]."""
    parts = []
    for axis, (d, theta) in enumerate(zip(cfg.rope_split, cfg.rope_theta)):
        freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)      # (d/2,)
        parts.append(pos[:, axis, None].double() * freqs[None])                  # (n, d/2)
    ang = torch.cat(parts, dim=1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x [..., n, head_dim] by angles [n, head_dim // 2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)
