"""`flowcache`: attention minus key redundancy (FlowCache, arXiv 2602.10825, ICLR 2026;
`mikeallen39/FlowCache: .../compression/compress_kv.py::R1KV.update_kv_token`).

Confirmed from the code: queries = the current chunk; per head, score = lambda * maxpool_7(mean over
queries of the attention probabilities) - (1 - lambda) * redundancy, redundancy_j = softmax_j(mean_i
cos(k_i, k_j)) with the diagonal zeroed; lambda = 0.07; top-`budget`.
Our reconstruction: head-averaged attention (from the commit pass), the 1D max-pool of 7 becomes a 3x3
spatial max-pool within each frame, and the mean cosine similarity is computed in O(n d) as
k_hat_j . (sum_i k_hat_i - k_hat_j) / (n - 1) on the concatenated heads (matrix-vector products on the
keys and their memoised inverse norms: the scoring runs on every layer after every commit).
The attention is that of a commit's probe queries, 1/8 of them (`probe`, ZipCache-style; `probe=1` for all:
docs/decisions/probe_validation/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import inverse_norms
from .scorer import Scorer
from .signals import check_kernel, frame_pool, max_pool, recent_attention


def spatial_max(values: torch.Tensor, layer, grid: int, kernel: int) -> torch.Tensor:
    """Max-pool a per-token signal over kernel x kernel within each frame (prompt tokens unchanged)."""
    return frame_pool(values, layer, grid, kernel, max_pool, float("-inf"))


def redundancy(k: torch.Tensor, inv: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over tokens of each key's mean cosine similarity to the others: k (H, n, Dh), inv (n,) the
    keys' inverse norms (the layer's memo; computed when None) -> (n,).
    With unit keys u_i = k_i / |k_i| over the concatenated heads, mean_cos_j = (u_j . sum_i u_i - 1) / (n - 1);
    the sum and the dot products are two matrix-vector products per head (torch's, which honour its thread
    count), and no normalised copy is made."""
    n = k.shape[1]
    if n < 2:
        return torch.zeros(n)
    k = k.detach().float()
    inv = inverse_norms(k) if inv is None else inv
    dots = torch.mv(k[0], torch.mv(k[0].T, inv))  # (n,) u_j . sum_i u_i, times |k_j|,
    for h in range(1, k.shape[0]):  # summed over heads
        dots.addmv_(k[h], torch.mv(k[h].T, inv))
    mean_cos = (dots.numpy() * inv.numpy() - 1.0) / (n - 1)  # diagonal removed
    e = np.exp(mean_cos - mean_cos.max())
    return torch.from_numpy(e / e.sum())


@dataclass
class FlowCache(Scorer):
    name = "flowcache"
    reads = "probs"
    reads_newest = True  # only the newest commit's attention (`recent`)
    lam: float = 0.07
    kernel: int = 3

    def __post_init__(self):
        check_kernel(self.kernel)

    def score(self, layer_idx, layer, ctx):
        att = spatial_max(recent_attention(self.observed, layer_idx), layer, ctx.grid, self.kernel)
        return self.lam * att - (1 - self.lam) * redundancy(layer.k, layer.inverse_key_norms())
