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


def attend_cached(
    layer,
    i: int,
    q_rot: torch.Tensor,
    k: torch.Tensor,
    k_rot: torch.Tensor,
    v: torch.Tensor,
    cached_kv: tuple[list[torch.Tensor], list[torch.Tensor]],
    *,
    stats: str,
    probes: torch.Tensor | None,
    block: int,
    meta=None,
    observe=None,
    chunk: int = -1,
    clock=None,
) -> torch.Tensor:
    """One layer's attention of a chunk's queries over the cache and the chunk itself, the step every model of
    the protocol shares: q_rot (H, n, Dh) rotated queries; k / k_rot (H, n, Dh) the chunk's keys un-rotated and
    rotated; v (H, n, Dh); `cached_kv` the cache's (rotated) key and value parts to put first. TempCache's merged
    tokens stand for `count` identical keys (+log(count) on their logits). The statistics `stats` asks for are
    formed for every query ("probs" without `probes`), for the probe queries only, or as raw q.k sums
    ("logits"); a commit (`meta` given) appends the chunk's un-rotated K/V, then `observe` folds the statistics
    over every cached token. Wall time of the attention and the statistics goes to `clock` -> (H, n, Dh)."""
    import time

    k_parts, v_parts = cached_kv
    k_all, v_all = torch.cat([*k_parts, k_rot], 1), torch.cat([*v_parts, v], 1)
    bias = None
    if len(layer) and bool((layer.meta["count"] != 1).any()):
        bias = torch.cat([layer.meta["count"].log(), k.new_zeros(k.shape[1])])
    t0 = time.perf_counter()
    colsum = colmax = logitsum = None
    n_probes = q_rot.shape[1]
    if stats == "probs" and probes is None:
        a, colsum, colmax, logitsum = attention_with_stats(q_rot, k_all, v_all, bias, block)
    else:
        a = fused_attention(q_rot, k_all, v_all, bias)
        if stats == "logits":
            logitsum = logit_sums(q_rot, k_all)
        elif stats == "probs":  # everything from the probe queries only
            colsum, colmax, logitsum = probe_stats(q_rot[:, probes], k_all, bias)
            n_probes = len(probes)
    attn_ms = (time.perf_counter() - t0) * 1e3
    if meta is not None:
        layer.append(k, v, meta, k_rot=k_rot)
    if observe is not None:  # over the cached tokens and the chunk's own
        observe.grow(i, len(layer))  # bookkeeping, like the cache's append: not the statistics' cost
        t0 = time.perf_counter()
        observe.commit(i, len(layer), colsum, colmax, logitsum, n_queries=n_probes, chunk=chunk)
        attn_ms += (time.perf_counter() - t0) * 1e3
    if clock is not None:
        clock.attn_ms += attn_ms
    return a
