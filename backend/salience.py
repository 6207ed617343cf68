"""PaFu-KV salience: the teacher's SSE labels and the Salience Estimation Head (arXiv 2601.21896).

Confirmed from the paper (abstract, HTML opening, reviews; full text and code are not public):
SSE is computed on the *bidirectional teacher's* attention P = softmax(QK^T / sqrt(D)); with blocks of
L_B tokens (our blocks = chunks), each key j gets three components over query sets I_low(j) (queries of
later blocks), I_diag(j) (its own block) and I_up(j) (earlier blocks, which exist only bidirectionally):
s_c(j) = (1/N_heads) sum_h max_{i in I_c(j)} P[h, i, j] (max over queries, mean over heads). A lightweight
MLP head (SEH) distilled from SSE predicts salience for the causal student.
Our reconstruction (methods.md §1): components max-normalised per clip and combined as
s = z(s_low) + z(s_up) + lambda_d * z(s_diag) with lambda_d = 0.5; the teacher runs on a clean clip at
t = 0.5 (the SSE on a noisy copy of the clip); the head is a per-layer 2-layer MLP (in -> 64 -> 1) on the
student's un-rotated key at commit plus its (y, x) grid position, trained with MSE + a listwise KL loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cache import KIND_FRAME, KVCache
from .models.dit import VideoDiT, teacher_mask
from .observe import Observer
from .rope import apply_rope, rope_angles


# ----------------------------------------------------------------------------------- teacher SSE
def sse_components(p: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """p (H, N, N) attention probabilities, block (N,) block id per token (-1 = prompt) ->
    (3, N) head-mean of the max attention each key gets from later / same / earlier blocks' queries."""
    H, N, _ = p.shape
    blocks = int(block.max()) + 1
    M = p.new_zeros(H, blocks, N)  # max over each block's queries
    for b in range(blocks):
        rows = (block == b).nonzero().flatten()
        if len(rows):
            M[:, b] = p[:, rows].amax(1)
    # suffix / prefix maxima over query blocks, then pick per key relative to its own block
    suffix = torch.flip(torch.cummax(torch.flip(M, [1]), 1).values, [1])  # max over blocks >= b
    prefix = torch.cummax(M, 1).values  # max over blocks <= b
    out = p.new_zeros(3, N)
    bj = block.clamp_min(0)
    is_frame = block >= 0
    idx = torch.arange(N)
    nxt = (bj + 1).clamp_max(blocks - 1)
    low = torch.where((bj + 1 < blocks)[None], suffix[:, nxt, idx], torch.zeros_like(suffix[:, 0]))
    prv = (bj - 1).clamp_min(0)
    up = torch.where((bj > 0)[None], prefix[:, prv, idx], torch.zeros_like(prefix[:, 0]))
    diag = M[:, bj, idx]
    out[0], out[1], out[2] = low.mean(0), diag.mean(0), up.mean(0)
    return out * is_frame


def combine_sse(comp: torch.Tensor, lambda_d: float = 0.5) -> torch.Tensor:
    """(3, N) components -> (N,) label: max-normalised s_low + s_up + lambda_d * s_diag."""
    z = comp / comp.amax(1, keepdim=True).clamp_min(1e-12)
    return z[0] + z[2] + lambda_d * z[1]


@torch.no_grad()
def teacher_sse(
    teacher: VideoDiT,
    prompt_tokens: torch.Tensor,
    latents: torch.Tensor,
    t: float = 0.5,
    seed: int = 0,
    lambda_d: float = 0.5,
) -> list[torch.Tensor]:
    """Per layer, the SSE label of every frame token of a clip (latents (T, C, g, g)) -> list of (T*g*g,)."""
    cfg = teacher.cfg
    T = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(latents.shape, generator=g)
    x = ((1 - t) * latents + t * eps)[None]
    tt = torch.full((1, T), t)
    P = prompt_tokens.shape[0]
    h = torch.cat([teacher.prompt_emb(prompt_tokens)[None], teacher.embed_frames(x)], 1)
    c = torch.cat([teacher.prompt_c[None, None], teacher.t_cond(tt)], 1)
    pos = torch.cat([torch.zeros(P, 3, dtype=torch.long), teacher.frame_positions(torch.arange(T))])
    mask = teacher_mask(T, cfg)
    block = torch.cat(
        [
            torch.full((P,), -1),
            torch.arange(T).div(cfg.chunk_frames, rounding_mode="floor").repeat_interleave(cfg.tokens_per_frame),
        ]
    )
    cos, sin = rope_angles(pos, cfg)
    labels = []
    for blk in teacher.blocks:

        def attend(q, k, v):
            qr, kr = apply_rope(q, cos, sin)[0], apply_rope(k, cos, sin)[0]  # (H, N, Dh)
            logits = (qr @ kr.transpose(1, 2)) / math.sqrt(cfg.head_dim)
            p = logits.masked_fill(~mask, float("-inf")).softmax(-1)
            labels.append(combine_sse(sse_components(p, block), lambda_d)[P:])
            return (p @ v[0])[None]

        h = blk(h, c, P, attend)
    return labels


# ----------------------------------------------------------------------------------- the head
LABELS = ("sse", "hindsight")  # what a head is trained on: teacher SSE (the paper) | student hindsight (ours)


def head_file(labels: str) -> str:
    """File name of the shipped head trained on `labels`."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    return "salience_head.safetensors" if labels == "sse" else f"salience_head_{labels}.safetensors"


@dataclass(frozen=True)
class SEHConfig:
    n_layer: int = 4
    key_dim: int = 128  # H * Dh of the student
    hidden: int = 64
    grid: int = 8  # token rows per frame
    cols: int | None = None  # token columns per frame (None: as many as rows)


class SalienceHead(nn.Module):
    """Per-layer 2-layer MLP: [un-rotated key, y, x] -> predicted salience."""

    def __init__(self, cfg: SEHConfig):
        super().__init__()
        self.cfg = cfg
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.key_dim + 2, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, 1))
            for _ in range(cfg.n_layer)
        )

    def features(self, k: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """k (H, n, Dh), y/x (n,) -> (n, H*Dh + 2)."""
        n = k.shape[1]
        span = torch.tensor([max(self.cfg.grid - 1, 1), max((self.cfg.cols or self.cfg.grid) - 1, 1)])
        yx = torch.stack([y.float(), x.float()], 1) / span
        return torch.cat([k.transpose(0, 1).reshape(n, -1), yx], 1)

    def forward(self, layer: int, feats: torch.Tensor) -> torch.Tensor:
        return self.mlps[layer](feats)[:, 0]

    @torch.no_grad()
    def predict_cache(self, cache: KVCache, out: list[torch.Tensor], only_new: bool = True) -> None:
        """Fill out[layer] (n,) (aligned with the layer's tokens, e.g. an Observer's extra array) for the frame
        tokens (those still at 0 when only_new) of every layer."""
        for i, layer in enumerate(cache.layers):
            m = layer.meta
            sel = m["kind"] == KIND_FRAME
            if only_new:
                sel &= out[i] == 0
            idx = sel.nonzero().flatten()
            if len(idx):  # the MLP's layers called directly: this runs after every commit
                lin1, act, lin2 = self.mlps[i]
                h = F.linear(
                    self.features(layer.k.index_select(1, idx), m["y"][idx], m["x"][idx]), lin1.weight, lin1.bias
                )
                out[i].index_copy_(
                    0, idx, F.linear(F.gelu(h, approximate=act.approximate), lin2.weight, lin2.bias)[:, 0]
                )

    @torch.no_grad()
    def predict_tail(self, cache: KVCache, n_new: int, out: list[torch.Tensor]) -> None:
        """Fill the last `n_new` entries of out[layer] (the chunk a commit just appended to every layer),
        the per-layer MLPs batched into one pair of matrix products: this runs after every commit."""
        if n_new <= 0:
            return
        feats = torch.stack(
            [
                self.features(layer.k[:, -n_new:], layer.meta["y"][-n_new:], layer.meta["x"][-n_new:])
                for layer in cache.layers
            ]
        )  # (L, c, H*Dh + 2)
        lin1 = [mlp[0] for mlp in self.mlps]
        lin2 = [mlp[2] for mlp in self.mlps]
        h = torch.baddbmm(
            torch.stack([l.bias for l in lin1])[:, None], feats, torch.stack([l.weight for l in lin1]).transpose(1, 2)
        )  # (L, c, hidden)
        h = F.gelu(h, approximate=self.mlps[0][1].approximate)
        pred = torch.baddbmm(
            torch.stack([l.bias for l in lin2])[:, None], h, torch.stack([l.weight for l in lin2]).transpose(1, 2)
        )[..., 0]  # (L, c)
        for dst, o in zip(out, pred):
            dst[-n_new:] = o


def student_keys(model: VideoDiT, prompt_tokens: torch.Tensor, latents: torch.Tensor) -> tuple[KVCache, Observer]:
    """The student's cache after committing a clip's clean latents chunk by chunk (what SEH sees), and the
    attention every commit observed (probabilities of every query: the hindsight labels)."""
    cfg = model.cfg
    cache = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
    obs = Observer(cfg.n_layer, "probs", allowed="probs", owner="hindsight labels")
    model.prefill(prompt_tokens, cache, observe=obs)
    for f0 in range(0, latents.shape[0], cfg.chunk_frames):
        x = latents[f0 : f0 + cfg.chunk_frames]
        model.forward_chunk(x, torch.zeros(len(x)), f0, cache, commit=True, observe=obs)
    return cache, obs


def listwise_loss(pred: torch.Tensor, label: torch.Tensor, temp: float = 0.1) -> torch.Tensor:
    """KL(softmax(label / temp) || softmax(pred / temp)) over the tokens of one clip."""
    return F.kl_div(F.log_softmax(pred / temp, 0), F.log_softmax(label / temp, 0), log_target=True, reduction="sum")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def recall_at(a_pred: np.ndarray, b_true: np.ndarray, share: float = 0.25) -> float:
    """Fraction of the true top-`share` tokens that are in the predicted top-`share`."""
    k = max(1, int(round(share * len(b_true))))
    return len(set(np.argsort(-a_pred)[:k]) & set(np.argsort(-b_true)[:k])) / k
