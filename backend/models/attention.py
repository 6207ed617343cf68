"""Attention kernels of the cached inference path and the statistics an observer can ask of a commit pass.

`STATS` are the levels, cheapest first: "none" (the fused kernel only), "logits" (raw q.k sums beside the
fused kernel: one matrix-vector product), "probs" (materialised probabilities: column sums and maxima, or
those of a few probe queries beside the fused kernel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STATS = ("none", "logits", "probs")  # attention statistics a commit pass records, cheapest first


def attention_with_stats(q, k, v, bias=None, block: int = 256):
    """Explicit softmax attention, computed in query blocks so memory stays bounded.
    q (H, nq, Dh), k/v (H, nk, Dh), bias (nk,) or None -> out (H, nq, Dh), colsum (H, nk), colmax (H, nk),
    logitsum (H, nk): column sums and maxima of the attention probabilities per head, and column sums of
    the raw scaled logits q.k / sqrt(Dh) (Deep Forcing scores tokens by raw q.k, not probabilities)."""
    H, nq, Dh = q.shape
    out = torch.empty_like(q)
    colsum = q.new_zeros(H, k.shape[1])
    colmax = q.new_zeros(H, k.shape[1])
    kt = k.transpose(1, 2) / math.sqrt(Dh)
    for s in range(0, nq, block):
        logits = q[:, s : s + block] @ kt  # (H, b, nk)
        if bias is not None:
            logits = logits + bias
        p = logits.softmax(-1)
        out[:, s : s + block] = p @ v
        colsum += p.sum(1)
        colmax = torch.maximum(colmax, p.amax(1))
    return out, colsum, colmax, logit_sums(q, k)


def logit_sums(q, k):
    """Column sums of the raw scaled logits q.k / sqrt(Dh) over the queries, without forming them:
    q (H, nq, Dh), k (H, nk, Dh) -> (H, nk) = (sum_i q_i) . k_j / sqrt(Dh). One matrix-vector product per
    head, so a policy that reads only these (Deep Forcing) needs no materialised attention."""
    return (q.sum(1, keepdim=True) @ k.transpose(1, 2))[:, 0] / math.sqrt(q.shape[-1])


def probe_stats(q, k, bias=None):
    """The statistics of a few probe queries q (H, m, Dh) over keys k (H, nk, Dh), bias (nk,) or None ->
    colsum, colmax (H, nk) of their attention probabilities and logitsum (H, nk) of their raw scaled logits.
    One (H, m, nk) block, the queries scaled rather than the keys (no copy of the cache's keys)."""
    logits = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(1, 2)  # (H, m, nk)
    logitsum = logits.sum(1)
    if bias is not None:
        logits = logits + bias
    p = logits.softmax(-1)
    return p.sum(1), p.amax(1), logitsum


def fused_attention(q, k, v, bias=None):
    """Softmax attention by torch's fused kernel (never forms the probabilities): q (H, nq, Dh), k/v (H, nk,
    Dh), bias (nk,) or None -> (H, nq, Dh)."""
    mask = None if bias is None else bias[None, None, None]
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]


def probe_queries(n: int, share: float, seed: int) -> torch.Tensor | None:
    """The probe queries of a commit pass: round(share * n) of its n queries (at least one), drawn at random
    with a fixed seed (the chunk index), sorted -> (m,) indices; None when share >= 1 (every query).
    ZipCache (He et al. 2024) estimates token saliency from the attention of a few probe tokens (recent +
    random) instead of all queries, so the probabilities are formed for those rows only; here all of a
    chunk's tokens arrive together, so the probes are a uniform random subset (our reconstruction), the
    same in every layer."""
    if share >= 1:
        return None
    m = max(1, round(share * n))
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randperm(n, generator=gen)[:m].sort().values
