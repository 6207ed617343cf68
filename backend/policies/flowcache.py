"""`flowcache`: attention minus key redundancy (FlowCache, arXiv 2602.10825, ICLR 2026;
`mikeallen39/FlowCache: .../compression/compress_kv.py::R1KV.update_kv_token`).

Confirmed from the code: queries = the current chunk; per head, score = lambda * maxpool_7(mean over
queries of the attention probabilities) - (1 - lambda) * redundancy, redundancy_j = softmax_j(mean_i
cos(k_i, k_j)) with the diagonal zeroed; lambda = 0.07; top-`budget`.
Our reconstruction: head-averaged attention (from the commit pass), the 1D max-pool of 7 becomes a 3x3
spatial max-pool within each frame, and the mean cosine similarity is computed in O(n d) as
k_hat_j . (sum_i k_hat_i - k_hat_j) / (n - 1) on the concatenated heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cache import KIND_FRAME
from .base import Policy
from .signals import frame_pool, recent_attention


def spatial_max(values: torch.Tensor, layer, grid: int, kernel: int) -> torch.Tensor:
    """Max-pool a per-token signal over kernel x kernel within each frame (prompt tokens unchanged)."""
    return frame_pool(values, layer, grid, kernel, F.max_pool2d, float("-inf"))


def redundancy(k: torch.Tensor) -> torch.Tensor:
    """softmax over tokens of each key's mean cosine similarity to the others: k (H, n, Dh) -> (n,)."""
    n = k.shape[1]
    if n < 2:
        return torch.zeros(n)
    kh = F.normalize(k.transpose(0, 1).reshape(n, -1), dim=1)                # (n, H*Dh)
    mean_cos = (kh @ kh.sum(0) - 1.0) / (n - 1)                              # diagonal removed
    return mean_cos.softmax(0)


@dataclass
class FlowCache(Policy):
    name = "flowcache"
    lam: float = 0.07
    kernel: int = 3

    def score(self, layer_idx, layer, ctx):
        att = spatial_max(recent_attention(layer), layer, ctx.grid, self.kernel)
        return self.lam * att - (1 - self.lam) * redundancy(layer.k)

    def describe(self):
        return {**super().describe(), "lambda": self.lam}
