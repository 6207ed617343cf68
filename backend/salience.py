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
from .observe import Observer


# ----------------------------------------------------------------------------------- teacher SSE
def _components(M: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """M (H, B, N): per query block, the max attention each key gets from its queries; block (N,) block id
    per token (-1 = condition) -> (3, N) head-mean of the max from later / same / earlier blocks' queries."""
    H, blocks, N = M.shape
    # suffix / prefix maxima over query blocks, then pick per key relative to its own block
    suffix = torch.flip(torch.cummax(torch.flip(M, [1]), 1).values, [1])  # max over blocks >= b
    prefix = torch.cummax(M, 1).values  # max over blocks <= b
    out = M.new_zeros(3, N)
    bj = block.clamp_min(0)
    is_frame = block >= 0
    idx = torch.arange(N, device=M.device)
    nxt = (bj + 1).clamp_max(blocks - 1)
    low = torch.where((bj + 1 < blocks)[None], suffix[:, nxt, idx], torch.zeros_like(suffix[:, 0]))
    prv = (bj - 1).clamp_min(0)
    up = torch.where((bj > 0)[None], prefix[:, prv, idx], torch.zeros_like(prefix[:, 0]))
    diag = M[:, bj, idx]
    out[0], out[1], out[2] = low.mean(0), diag.mean(0), up.mean(0)
    return out * is_frame


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
    return _components(M, block)


def sse_from_qk(
    q: torch.Tensor, k: torch.Tensor, n_prefix: int, block: torch.Tensor, lambda_d: float = 0.5, rows: int = 2048
) -> torch.Tensor:
    """The SSE label of every frame token from one layer's rotated queries and keys q, k (H, N, Dh) over a
    whole clip, the first `n_prefix` of them condition tokens; block (N - n_prefix,) the chunk of each frame
    token. The teacher's frame queries attend to every token (only the condition's own queries are masked,
    and they are not read), so the probabilities are formed `rows` queries at a time, never as an (N, N)
    matrix: a 21-frame 480x832 Wan clip has 32760 tokens. -> (N - n_prefix,)."""
    H, N, Dh = q.shape
    blocks = int(block.max()) + 1
    block = block.to(q.device)
    kt = k.float().transpose(1, 2) / math.sqrt(Dh)  # (H, Dh, N)
    M = q.new_zeros(H, blocks, N, dtype=torch.float32)
    for b in range(blocks):
        idx = (block == b).nonzero().flatten() + n_prefix
        for s in range(0, len(idx), rows):
            p = (q[:, idx[s : s + rows]].float() @ kt).softmax(-1)  # (H, r, N)
            M[:, b] = torch.maximum(M[:, b], p.amax(1))
    full = torch.cat([torch.full((n_prefix,), -1, dtype=block.dtype, device=q.device), block])
    return combine_sse(_components(M, full), lambda_d)[n_prefix:].cpu()


def combine_sse(comp: torch.Tensor, lambda_d: float = 0.5) -> torch.Tensor:
    """(3, N) components -> (N,) label: max-normalised s_low + s_up + lambda_d * s_diag."""
    z = comp / comp.amax(1, keepdim=True).clamp_min(1e-12)
    return z[0] + z[2] + lambda_d * z[1]


@torch.no_grad()
def teacher_sse(
    teacher, condition: torch.Tensor, latents: torch.Tensor, t: float = 0.5, seed: int = 0, lambda_d: float = 0.5
) -> list[torch.Tensor]:
    """Per layer, the SSE label of every frame token of a clip (latents (T, C, h, w)) -> list of (T * tokens,).
    `teacher`: any model of the protocol with a bidirectional `teacher_attention` pass (the world's teacher
    DiT; a Wan2.1 transformer), `condition`: the prompt as it takes it (`model.condition(prompt)[0]`)."""
    geo = teacher.geometry
    T = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(latents.shape, generator=g).to(latents.device)
    x = (1 - t) * latents + t * eps
    block = torch.arange(T).div(geo.chunk_frames, rounding_mode="floor").repeat_interleave(geo.tokens_per_frame)
    labels = []
    teacher.teacher_attention(condition, x, t, lambda q, k, n: labels.append(sse_from_qk(q, k, n, block, lambda_d)))
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
        span = torch.tensor([max(self.cfg.grid - 1, 1), max((self.cfg.cols or self.cfg.grid) - 1, 1)], device=k.device)
        yx = torch.stack([y.float(), x.float()], 1).to(k.device) / span
        return torch.cat([k.float().transpose(0, 1).reshape(n, -1), yx], 1)

    def check(self, geometry) -> None:
        """A ValueError unless this head scores the keys of a model of `geometry` (layers, heads x dims, grid)."""
        c, g = self.cfg, geometry
        want = (g.n_layer, g.n_head * g.head_dim, g.grid[0], g.grid[1])
        have = (c.n_layer, c.key_dim, c.grid, c.cols or c.grid)
        if have != want:
            raise ValueError(
                f"PaFu-KV's salience head was distilled for {have[0]} layers of {have[1]}-dim keys on a "
                f"{have[2]}x{have[3]} grid; this model has {want[0]} layers of {want[1]}-dim keys on a "
                f"{want[2]}x{want[3]} grid: distil one for it (`python -m backend.train salience`, "
                "with --model wan:DIR for a Wan generator) and point to its folder"
            )

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
                pred = F.linear(F.gelu(h, approximate=act.approximate), lin2.weight, lin2.bias)[:, 0]
                out[i].index_copy_(0, idx.to(out[i].device), pred.to(out[i].device))

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


def student_keys(model, condition: torch.Tensor, latents: torch.Tensor) -> tuple[KVCache, Observer]:
    """The student's cache after committing a clip's clean latents chunk by chunk (what SEH sees), and the
    attention every commit observed (probabilities of every query: the hindsight labels). `condition`: the
    prompt as the model takes it (`model.condition(prompt)[0]`)."""
    geo = model.geometry
    cache = KVCache(geo.n_layer, geo.n_head, geo.head_dim)
    obs = Observer(geo.n_layer, "probs", allowed="probs", owner="hindsight labels")
    model.prefill(condition, cache, observe=obs)
    for f0 in range(0, latents.shape[0], geo.chunk_frames):
        x = latents[f0 : f0 + geo.chunk_frames]
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
