"""The teacher and student training objectives (flow matching), the context the student is trained on
(teacher forcing, its own rollouts, windowed caches) and the health check of a training run."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..autoencoder import frames_to_tensor
from ..data import clip_batch
from ..flow import shift_t


def encode_clips(ae, frames) -> torch.Tensor:
    """uint8 (B, T, S, S, 3), numpy or tensor -> latents (B, T, C, g, g)."""
    B, T = frames.shape[:2]
    with torch.no_grad():
        z = ae.encode(frames_to_tensor(frames.reshape(B * T, *frames.shape[2:])))
    return z.view(B, T, *z.shape[1:])


def noised(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified-flow interpolation of x0 (B, T, C, g, g) at levels t (B, T) with noise eps (fresh when None)
    -> (x_t, eps); the velocity target is eps - x0."""
    eps = torch.randn_like(x0) if eps is None else eps
    return (1 - t)[..., None, None, None] * x0 + t[..., None, None, None] * eps, eps


def weighted_mse(v: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean squared error with per-token weights w (B, T, 1, g, g), normalised by the mean weight."""
    return (((v - target) ** 2) * w).mean() / w.mean()


def teacher_loss(model, tokens, x0, cfg, rng, mask=None):
    B, T = x0.shape[:2]
    dev = x0.device
    t = shift_t(torch.rand(B, 1, device=dev).expand(B, T).clone(), cfg.shift)
    clean = torch.zeros(B, T, dtype=torch.bool, device=dev)
    for b in range(B):
        if rng.random() < cfg.p_clean_prefix:
            clean[b, : int(rng.integers(1, T))] = True
    t = torch.where(clean, torch.zeros_like(t), t)
    xt, eps = noised(x0, t)
    off = int(rng.integers(0, cfg.max_t_offset + 1)) if rng.random() < cfg.p_t_offset else 0
    v = model.bidirectional(tokens, xt, t, t_offset=off)
    w = (~clean).float()[..., None, None, None]  # (B, T, 1, 1, 1)
    if mask is not None:
        w = w * token_weights(mask, cfg)  # (B, T, 1, g, g)
    return (((v - (eps - x0)) ** 2) * w).sum() / w.expand_as(v).sum().clamp_min(1)


def token_weights(mask: torch.Tensor, cfg) -> torch.Tensor:
    """Per-token loss weights (B, T, 1, g, g) from sprite masks (B, T, g, g): sprites are a few percent of
    the tokens, so an unweighted loss learns backgrounds first and sprites last (what session 1 saw)."""
    w = 1.0 + (cfg.sprite_weight - 1.0) * mask
    w[:, 0] *= cfg.first_weight
    return w[:, :, None]


@torch.no_grad()
def rollout_context(model, tokens, x0, cfg, t_offset: int = 0) -> torch.Tensor:
    """Context frames the student generated itself: (B, T, C, g, g), like x0.

    Scheduled sampling computed in parallel (Jacobi rounds of the teacher-forcing layout): each round
    generates every frame from pure noise with a `rollout_steps` re-noising sampler, given the previous
    round's frames as clean context; after r rounds frame k is exactly what an autoregressive rollout of
    depth min(k, r) from ground truth would produce (same noise aside). The first `rollout_anchor` frames
    stay ground truth. Our reconstruction of the exposure-bias fix (Self-Forcing trains on its own
    rollouts with a distribution-matching loss; here the target stays the ground-truth next frame, which
    teaches the student to pull drifted context back to the world, DAgger style)."""
    B, T = x0.shape[:2]
    levels = shift_t(torch.linspace(1.0, 0.0, cfg.rollout_steps + 1)[:-1], cfg.shift)
    zeros = torch.zeros(B, T, device=x0.device)
    ctx = x0
    for _ in range(cfg.rollout_rounds):
        x = torch.randn_like(x0)
        for i, t in enumerate(levels.tolist()):
            v = model.teacher_forcing(tokens, ctx, zeros, x, torch.full((B, T), t, device=x0.device), t_offset=t_offset)
            pred = x - t * v
            if i + 1 < len(levels):
                x = (1 - levels[i + 1]) * pred + levels[i + 1] * torch.randn_like(x0)
        ctx = torch.cat([x0[:, : cfg.rollout_anchor], pred[:, cfg.rollout_anchor :]], 1)
    return ctx


def context_window(cfg, T: int, rng) -> tuple[int, int]:
    """(window, sink) chunks for one student step: (0, 0), the full causal context, unless this step
    draws a windowed context (probability p_window, and only when a window shorter than the clip fits)."""
    hi = min(cfg.window_max, T - 2)
    if not cfg.p_window or hi < cfg.window_min or rng.random() >= cfg.p_window:
        return 0, 0
    return int(rng.integers(cfg.window_min, hi + 1)), int(rng.integers(0, cfg.max_sink + 1))


def student_loss(model, tokens, x0, cfg, rng, mask=None):
    B, T = x0.shape[:2]
    dev = x0.device
    t = shift_t(torch.rand(B, T, device=dev), cfg.shift)  # independent level per chunk frame
    xt, eps = noised(x0, t)
    off = int(rng.integers(0, cfg.max_t_offset + 1)) if rng.random() < cfg.p_t_offset else 0
    if cfg.p_rollout and rng.random() < cfg.p_rollout:
        s = torch.zeros(B, T, device=dev)
        ctx = rollout_context(model, tokens, x0, cfg, off)
    else:
        s = torch.rand(B, 1, device=dev) * cfg.ctx_noise * (torch.rand(B, 1, device=dev) < cfg.p_ctx_noise)
        s = s.expand(B, T)
        ctx, _ = noised(x0, s)
    window, sink = context_window(cfg, T, rng)
    v = model.teacher_forcing(tokens, ctx, s, xt, t, t_offset=off, window=window, sink=sink)
    if mask is None:
        return F.mse_loss(v, eps - x0)
    w = token_weights(mask, cfg)  # (B, T, 1, g, g)
    return weighted_mse(v, eps - x0, w)


def first_chunk_loss(model, tokens, x0, cfg, mask=None, ae=None, frames=None):
    """Flow-matching loss of the first chunk alone, x0 (B, F, C, g, g) with F = chunk_frames.

    The first chunk is generated from the prompt alone, the student's hardest case: on validation prompts
    its first frames carried 2.7 extra objects, against under 1 per frame over the first 48 frames. Every
    training clip holds one first chunk, so `first_batch` adds that many more per step. In the student's
    layout the first chunk attends only to the prompt and to itself, which is exactly the bidirectional
    [prompt | chunk] sequence (tested), at half the tokens of the teacher-forcing layout. One noise level per
    chunk and no position offset: what inference computes. With `cfg.pixel_weight` > 0 (and the autoencoder `ae`
    and the chunk's uint8 `frames` (B, F, S, S, 3)), `pixel_loss` is added."""
    B, Fr = x0.shape[:2]
    pairs = B // 2 if cfg.shape_contrast else B  # counterfactual pairs (rows i, P + i) share their t and noise
    t = shift_t(torch.rand(pairs, 1, device=x0.device), cfg.shift)
    eps = torch.randn_like(x0[:pairs])
    if cfg.shape_contrast:
        t, eps = t.repeat(2, 1), eps.repeat(2, 1, 1, 1, 1)
    t = t.expand(B, Fr)
    xt, eps = noised(x0, t, eps)
    v = model.bidirectional(tokens, xt, t)
    w = torch.ones_like(x0[:, :, :1]) if mask is None else token_weights(mask, cfg)  # (B, F, 1, g, g)
    loss = weighted_mse(v, eps - x0, w)
    x0_hat = xt - t[..., None, None, None] * v
    if cfg.pixel_weight and ae is not None:
        loss = loss + cfg.pixel_weight * pixel_loss(ae, x0_hat, frames, w)
    if cfg.shape_contrast and cfg.contrast_shared:  # the other prompt on the same noisy input: only the word differs
        P = B // 2
        hi = t[:P, 0] >= cfg.contrast_min_t  # where the input carries little of the shape
        if hi.any():
            x0_other = xt[:P][hi] - t[:P][hi][..., None, None, None] * model.bidirectional(
                tokens[P:][hi], xt[:P][hi], t[:P][hi]
            )
            est, truth = torch.cat([x0_hat[:P][hi], x0_other]), torch.cat([x0[:P][hi], x0[P:][hi]])
            loss = loss + cfg.shape_contrast * shape_contrast(est, truth)
    elif cfg.shape_contrast:
        loss = loss + cfg.shape_contrast * shape_contrast(x0_hat, x0)
    return loss


def shape_contrast(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Relative error of the clean estimates' difference across counterfactual pairs (rows i and P + i of
    (2P, F, C, g, g): the same scene, noise and level, one object's shape swapped in frames and prompt) against the
    true difference: 1 when the estimate ignores the shape, 0 when it moves exactly as the frames do.

    Why: in the shipped latent a sprite's shape is about 8% of its latent energy, and at high noise the plain
    loss's error is dominated by where the sprite is and what colour, which the pair shares; the difference
    cancels that shared error and leaves the shape's. The pair's two plain losses stay in the objective (both
    rows are real training scenes), so this re-weights the shape's directions rather than adding a target. Our
    hypothesis of the binding diagnosis (docs/decisions/binding_contrast/), not from a paper."""
    P = x0.shape[0] // 2
    d = x0[:P] - x0[P:]  # (P, F, C, g, g)
    return ((x0_hat[:P] - x0_hat[P:] - d) ** 2).sum() / (d**2).sum().clamp_min(1e-6)


def pixel_loss(ae, x0_hat: torch.Tensor, frames: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Pixel MSE of the decoded clean estimate x0_hat (B, F, C, g, g) against the true frames (B, F, S, S, 3)
    uint8, with the token weights w (B, F, 1, g, g) spread over each token's pixels; the decoder is frozen (only
    the model gets gradients). The latent MSE weighs every latent direction alike, while a sprite's shape lives in
    a few directions of its one or two tokens (a square and a circle of the same colour and place differ by 0.03
    per latent unit, frame-averaged); through the decoder those directions weigh what they change on screen.
    Our hypothesis of the binding diagnosis (docs/decisions/binding_factored/), not from a paper."""
    B, Fr = x0_hat.shape[:2]
    pred = ae.decode(x0_hat.flatten(0, 1))  # (B*F, 3, S, S)
    target = frames_to_tensor(frames.reshape(B * Fr, *frames.shape[2:])).to(pred.device)
    k = pred.shape[-1] // w.shape[-1]
    wp = w.flatten(0, 1).repeat_interleave(k, -1).repeat_interleave(k, -2)  # (B*F, 1, S, S)
    return weighted_mse(pred, target, wp)


@torch.no_grad()
def next_frame_error(model, ae, stage: str, n: int = 8) -> dict:
    """Health check (DESIGN §11): one-step x0 prediction of frame k from pure noise given clean frames < k,
    against the copy-last-frame baseline (held-out-style fixed seed, latent units)."""
    rng = np.random.default_rng(999)
    frames, tokens = clip_batch(rng, n, 12)
    dev = next(model.parameters()).device
    x0 = encode_clips(ae, torch.from_numpy(frames).to(dev))
    tokens = torch.from_numpy(tokens).to(dev)
    B, T = x0.shape[:2]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(dev)
    t = torch.ones(B, T, device=dev)
    if stage == "teacher":
        tt = torch.zeros(B, T, device=dev)
        tt[:, -1] = 1.0
        xt = torch.where(tt[..., None, None, None] > 0, eps, x0)
        pred = xt[:, -1] - model.bidirectional(tokens, xt, tt)[:, -1]
        target, last = x0[:, -1], x0[:, -2]
    else:
        v = model.teacher_forcing(tokens, x0, torch.zeros(B, T, device=dev), eps, t)
        pred = (eps - v)[:, 1:]
        target, last = x0[:, 1:], x0[:, :-1]
    return {
        "next_frame_mse": float(((pred - target) ** 2).mean()),
        "copy_last_mse": float(((last - target) ** 2).mean()),
    }
