"""Attention kernels of the cached inference path and the statistics an observer can ask of a commit pass.

`STATS` are the levels, cheapest first: "none" (the fused kernel only), "logits" (raw q.k sums beside the
fused kernel: one matrix-vector product), "probs" (materialised probabilities: column sums and maxima, or
those of a few probe queries beside the fused kernel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

STATS = ("none", "logits", "probs")  # attention statistics a commit pass records, cheapest first


REGIONS = ("first", "middle", "previous", "own")  # frame 0 | older history | the newest past frame | the chunk


def region_shares(colsum: torch.Tensor, frame: torch.Tensor, kind: torch.Tensor, n_new: int) -> torch.Tensor:
    """Each head's share of its attention over REGIONS at one commit pass: colsum (H, n) column sums over the
    cache in cache order with the chunk's n_new tokens last, frame / kind (n,) the tokens' metadata -> (H, 4);
    prompt anchors count in none (Wan's text is cross-attention: the shares mean the same for both models)."""
    fr, kd = frame.numpy(), kind.numpy()
    region = np.full(len(fr), -1)
    past = np.arange(len(fr)) < len(fr) - n_new
    is_frame = kd != 0
    region[past & is_frame] = 1
    if (past & is_frame).any():
        newest = fr[past & is_frame].max()
        region[past & is_frame & (fr == newest)] = 2
    region[past & is_frame & (fr == 0)] = 0
    region[~past] = 3
    out = torch.zeros(colsum.shape[0], len(REGIONS))
    sel = torch.from_numpy(np.flatnonzero(region >= 0))
    out.index_add_(1, torch.from_numpy(region[region >= 0]), colsum.index_select(1, sel).float())
    return out / out.sum(1, keepdim=True).clamp_min(1e-12)


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
    Dh), bias (nk,), per head (H, 1, nk), or None -> (H, nq, Dh)."""
    mask = None if bias is None else (bias[None] if bias.dim() == 3 else bias[None, None, None])
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]


def head_groups(present: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Heads that hold the same cached tokens, grouped: present (H, n) bool -> [(heads (h,), tokens (m,) or
    None for all)], so each group attends over its own tokens only (Dummy Forcing's packed attention: a head
    that keeps no history attends over the prompt and the chunk, and pays for nothing else)."""
    rows, inverse = torch.unique(present, dim=0, return_inverse=True)
    out = []
    for g, row in enumerate(rows):
        heads = (inverse == g).nonzero().flatten()
        out.append((heads, None if bool(row.all()) else row.nonzero().flatten()))
    return out


def packed_attention(q, k, v, present: torch.Tensor, bias=None):
    """Fused attention where heads hold different cached tokens: q (H, nq, Dh), k/v (H, nk, Dh) with the nk - n
    chunk tokens last, present (H, n) bool over the n cached ones, bias (nk,) or None -> (H, nq, Dh). One fused
    call per group of heads (`head_groups`), over that group's tokens and the chunk: the skipped tokens cost
    no compute (a -inf mask would still score them)."""
    n, nk = present.shape[1], k.shape[1]
    out = torch.empty_like(q)
    tail = torch.arange(n, nk)
    for heads, cols in head_groups(present):
        qh, kh, vh = q.index_select(0, heads), k.index_select(0, heads), v.index_select(0, heads)
        bh = bias
        if cols is not None:
            cols = torch.cat([cols, tail])
            kh, vh = kh.index_select(1, cols), vh.index_select(1, cols)
            bh = None if bias is None else bias.index_select(0, cols)
        out.index_copy_(0, heads, fused_attention(qh, kh, vh, bh))
    return out


def head_bias(present: torch.Tensor, n_new: int, bias=None) -> torch.Tensor:
    """The additive mask of per-head holdings for the statistics passes: present (H, n) bool over the cached
    tokens, n_new chunk tokens after them (held by every head), bias (n + n_new,) or None -> (H, 1, n + n_new)
    with -inf where a head does not hold the token."""
    H = present.shape[0]
    held = torch.cat([present, present.new_ones(H, n_new)], 1)
    out = torch.zeros(H, 1, held.shape[1]).masked_fill_(~held[:, None], float("-inf"))
    return out if bias is None else out + bias


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
    present = layer.head_mask()  # (H, n) or None: heads holding different tokens (per-head policies)
    t0 = time.perf_counter()
    colsum = colmax = logitsum = None
    n_probes = q_rot.shape[1]
    if stats == "none" and present is not None:
        a = packed_attention(q_rot, k_all, v_all, present, bias)
    else:
        if present is not None:  # statistics over every column: absent tokens masked per head
            bias = head_bias(present, k.shape[1], bias)
        if stats == "probs" and probes is None:
            a, colsum, colmax, logitsum = attention_with_stats(q_rot, k_all, v_all, bias, block)
        else:
            a = fused_attention(q_rot, k_all, v_all, bias)
            if stats == "logits":
                logitsum = logit_sums(q_rot, k_all)
            elif stats == "probs":  # everything from the probe queries only
                colsum, colmax, logitsum = probe_stats(q_rot[:, probes], k_all, bias)
                n_probes = len(probes)
        if present is not None and logitsum is not None:  # a head's sums over the tokens it holds
            logitsum = logitsum.masked_fill(~torch.isfinite(bias[:, 0]), 0.0)
    attn_ms = (time.perf_counter() - t0) * 1e3
    if meta is not None:
        layer.append(k, v, meta, k_rot=k_rot)
    if observe is not None:  # over the cached tokens and the chunk's own
        observe.grow(i, len(layer))  # bookkeeping, like the cache's append: not the statistics' cost
        t0 = time.perf_counter()
        regions = None
        if colsum is not None and getattr(observe, "wants_regions", False):
            m = layer.meta
            regions = region_shares(colsum, m["frame"], m["kind"], k.shape[1])
        observe.commit(i, len(layer), colsum, colmax, logitsum, n_queries=n_probes, chunk=chunk, regions=regions)
        attn_ms += (time.perf_counter() - t0) * 1e3
    if clock is not None:
        clock.attn_ms += attn_ms
    return a
