"""How the cache stores the tokens a policy keeps: KV quantisation of older frame tokens, uniform or mixed
precision. A setting of the cache, not of any scorer: every policy composes with it (`policies.base.Policy`
applies it after each keep), and byte budgets count it (`policies.build.budget_tokens`).

Frame tokens older than the newest chunk and the `residual` frames before it that are still fp32 move to
`storage`; with `salient_storage`, the top `salient_share` of them by the policy's score (else by past
attention) go there instead (mixed precision, MiKV / ZipCache style). Prompt anchors, the newest chunk and the
residual stay fp32: KIVI (arXiv 2402.02750) keeps its newest R tokens (R = 32-128) in full precision the same
way; R counted in frames here is our reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import DTYPES, KIND_FRAME, QUANT_SCHEMES, LayerCache


@dataclass(frozen=True)
class Storage:
    storage: str = "fp32"  # dtype older frame tokens are stored at (fp32 bf16 int8 int4 int2)
    salient_storage: str | None = None  # mixed precision: the most salient tokens at this dtype
    salient_share: float = 0.25  # share of the quantised tokens that count as salient
    quant: str = "channel"  # integer storage scheme: channel (KIVI keys / per-head values) | token | hadamard
    residual: int = 0  # KIVI's full-precision residual: the newest frames before the newest chunk kept fp32

    def __post_init__(self):
        for d in (self.storage, self.salient_storage):
            if d is not None and d not in DTYPES:
                raise ValueError(f"storage dtype must be one of {', '.join(DTYPES)}, got {d!r}")
        if self.quant not in QUANT_SCHEMES:
            raise ValueError(f"quant must be one of {', '.join(QUANT_SCHEMES)}, got {self.quant!r}")
        if not 0.0 <= self.salient_share <= 1.0:
            raise ValueError(f"salient_share must be in [0, 1], got {self.salient_share}")
        if isinstance(self.residual, bool) or int(self.residual) != self.residual or self.residual < 0:
            raise ValueError(f"residual must be a whole number of frames >= 0, got {self.residual!r}")

    @property
    def lossless(self) -> bool:
        """Every token stays fp32 (nothing to do after a keep)."""
        return self.storage == "fp32" and self.salient_storage is None

    def apply(self, layer: LayerCache, newest_first: int, salience) -> None:
        """Move the layer's older fp32 frame tokens to their storage dtype. `newest_first`: the first frame of
        the newest chunk; `salience`: a callable -> (n,) scores ranking the tokens for mixed precision (called
        only with `salient_storage`)."""
        if self.lossless:
            return
        m = layer.meta
        todo = (
            ((m["kind"] == KIND_FRAME) & (m["frame"] < newest_first - self.residual) & (m["dtype"] == 0))
            .nonzero()
            .flatten()
        )
        if len(todo) == 0:
            return
        if self.salient_storage is not None:
            s = salience()[todo]
            n_sal = int(round(self.salient_share * len(todo)))
            top = s.float().topk(n_sal).indices if n_sal else torch.zeros(0, dtype=torch.long)
            sal = torch.zeros(len(todo), dtype=torch.bool)
            sal[top] = True
            layer.set_dtype(todo[sal], self.salient_storage, self.quant)
            todo = todo[~sal]
        layer.set_dtype(todo, self.storage, self.quant)
