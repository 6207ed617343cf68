"""The world model's bidirectional teacher pass over a whole clip, for PaFu-KV's SSE labels (backend.salience).

The teacher is a `VideoDiT` trained without the causal mask: every frame token attends to the prompt and to
every frame (`teacher_mask`; the prompt's tokens attend only to the prompt)."""

from __future__ import annotations

import functools
import math

import torch

from ..config import ModelConfig
from ..rope import apply_rope, rope_angles


@functools.lru_cache(maxsize=16)
def teacher_mask(n_frames: int, cfg: ModelConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """[prompt | frames] bidirectional: frames see everything, prompt sees only the prompt.
    Cached per (length, config, device), as the teacher-forcing mask: read-only."""
    P, N = cfg.n_prompt, n_frames * cfg.tokens_per_frame
    m = torch.ones(P + N, P + N, dtype=torch.bool, device=device)
    m[:P, P:] = False
    return m


@torch.no_grad()
def teacher_attention(model, condition: torch.Tensor, x: torch.Tensor, t: float, visit) -> None:
    """One bidirectional pass over the clip x (T, C, g, g) at noise level t with the prompt tokens `condition`
    (P,): visit(q, k, n_prefix) gets every layer's rotated queries and keys (H, P + T*g*g, Dh), the P prompt
    tokens first."""
    cfg = model.cfg
    T, P = x.shape[0], condition.shape[0]
    h = torch.cat([model.embed_prompt(condition)[None], model.embed_frames(x[None])], 1)
    c = torch.cat([model.prompt_c[None, None], model.t_cond(torch.full((1, T), t))], 1)
    pos = torch.cat([torch.zeros(P, 3, dtype=torch.long), model.frame_positions(torch.arange(T))])
    mask = teacher_mask(T, cfg)
    cos, sin = rope_angles(pos, cfg)
    for blk in model.blocks:

        def attend(q, k, v):
            qr, kr = apply_rope(q, cos, sin)[0], apply_rope(k, cos, sin)[0]  # (H, N, Dh)
            visit(qr, kr, P)
            logits = (qr @ kr.transpose(1, 2)) / math.sqrt(cfg.head_dim)
            return (logits.masked_fill(~mask, float("-inf")).softmax(-1) @ v[0])[None]

        h = blk(h, c, P, attend)
