"""One way to turn (policy name, budget text, parameters) into a Policy for a model and a video length.

Used by the CLI, the benchmark and the explorer, so that all three accept and reject the same inputs.
"""
from __future__ import annotations

from typing import Callable

from . import POLICIES, make_policy
from .budget import BudgetError, parse_budget


def budget_tokens(budget: str | int, cfg, n_frames: int) -> int:
    """Tokens per layer for a budget text at this model and length; rejects budgets above the full cache."""
    b = parse_budget(budget)
    full = cfg.n_prompt + n_frames * cfg.tokens_per_frame
    n = b.tokens(n_prompt=cfg.n_prompt, tokens_per_frame=cfg.tokens_per_frame, n_frames=n_frames,
                 n_layer=cfg.n_layer, bytes_per_token=2 * cfg.dim * 4)
    if n > full:
        raise BudgetError(f"budget {b} = {n} tokens per layer is above the full cache at {n_frames} frames "
                          f"({full} tokens per layer); use a smaller budget or the `full` policy")
    return n


def parse_params(text: str | None) -> dict:
    """'alpha=0.5, storage=int4' -> {'alpha': 0.5, 'storage': 'int4'} (ints, floats, booleans, strings)."""
    out = {}
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"policy parameters are KEY=VALUE pairs separated by commas; got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if not k.isidentifier():
            raise ValueError(f"bad policy parameter name {k!r}")
        out[k] = _value(v)
    return out


def _value(v: str):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def build_policy(name: str, budget: str | int | None, n_frames: int, model, ae=None, prompt: str = "",
                 seed: int = 0, params: dict | None = None, progress: Callable | None = None):
    """The named policy with its budget in tokens; `oracle` gets its full-cache reference run (slow)."""
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    kw = dict(params or {})
    make_policy(name, **kw)                                   # bad parameters fail before anything runs
    if budget not in (None, ""):
        kw["budget"] = budget_tokens(budget, model.cfg, n_frames)
    if name == "oracle":
        from .oracle import reference_scores
        if progress:
            progress("oracle: full-cache reference run")
        kw["reference"] = reference_scores(model, ae, prompt, n_frames, seed)
    return make_policy(name, **kw)


__all__ = ["budget_tokens", "parse_params", "build_policy", "BudgetError"]
