"""Budgets in tokens and the parameter listings of the registered policies (CLI, benchmark, explorer)."""

from __future__ import annotations

from ..settings import parse_params
from .budget import BudgetError, parse_budget


def budget_tokens(
    budget: str | int,
    geometry,
    n_frames: int,
    storage: str = "fp32",
    salient_storage: str | None = None,
    salient_share: float = 0.25,
    quant: str = "channel",
    residual: int = 0,
) -> int:
    """Tokens per layer for a budget text at a model's `geometry` (`models.protocol.Geometry`) and video length
    (a byte budget at the policy's storage: older tokens at `storage`, `salient_share` of them at
    `salient_storage`, the prompt, the newest chunk and `residual` frames before it at fp32); rejects budgets
    above the full cache."""
    from ..quant import bytes_per_token

    b = parse_budget(budget)
    full = geometry.n_prompt + n_frames * geometry.tokens_per_frame
    tpf, H, Dh = geometry.tokens_per_frame, geometry.n_head, geometry.head_dim
    per = bytes_per_token(H, Dh, storage, quant, tpf)
    if salient_storage is not None:
        per = salient_share * bytes_per_token(H, Dh, salient_storage, quant, tpf) + (1 - salient_share) * per
    n = b.tokens(
        n_prompt=geometry.n_prompt,
        tokens_per_frame=tpf,
        n_frames=n_frames,
        n_layer=geometry.n_layer,
        bytes_per_token=per,
        fixed_tokens=geometry.n_prompt + (geometry.chunk_frames + residual) * tpf,
        fixed_bytes_per_token=bytes_per_token(H, Dh, "fp32"),
    )
    if n > full:
        raise BudgetError(
            f"budget {b} = {n} tokens per layer is above the full cache at {n_frames} frames "
            f"({full} tokens per layer); use a smaller budget or the `full` policy"
        )
    return n


__all__ = ["budget_tokens", "parse_params", "BudgetError"]


def policy_parameters(name: str) -> dict[str, object]:
    """A policy's own user-settable parameters and their defaults: its own fields, and the shared ones of
    `Policy` whose default it changes (PaFu-KV's granularity); private state (`_last`) is not a parameter."""
    from .params import is_own, parameters

    return {k: p.default for k, p in parameters(name).items() if is_own(p)}


def shared_parameters() -> str:
    """One line on the parameters every policy takes."""
    from ..cache import DTYPES, QUANT_SCHEMES
    from .layer_split import LAYER_SPLITS
    from .rope_modes import ROPE_MODES

    return (
        f"granularity=token|frame; rope={'|'.join(ROPE_MODES)}; storage={'|'.join(DTYPES)} (KV quantization "
        f"of older tokens, counted exactly in the byte budget); salient_storage=DTYPE with salient_share=0.25 "
        f"(mixed precision: the most salient tokens stay at the higher precision); "
        f"quant={'|'.join(QUANT_SCHEMES)} (integer storage: keys per channel and values per head, KIVI style; "
        f"one range per token; or KIVI style after a Hadamard rotation of each head, QuaRot style); "
        f"residual=N (the newest N frames before the newest chunk stay fp32, KIVI's "
        f"full-precision residual); layer_split={'|'.join(LAYER_SPLITS)}; probe=SHARE in (0, 1] (a policy "
        f"that reads attention probabilities forms them for that share of each commit's queries, "
        f"ZipCache-style probes; 1 = all); period=N (evict only once over budget, then down to N - 1 chunks "
        f"below it: the keep, and the newest-chunk attention TOVA / SnapKV / FlowCache / PackCache read, "
        f"once every N chunks; 1 = every chunk)"
    )
