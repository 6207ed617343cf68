"""Registry of named, pre-configured cache policies (what the CLI, benchmark and UI list)."""

from __future__ import annotations

from collections.abc import Callable

from .base import EvictContext, LayerEviction, Policy
from .budget import Budget, BudgetError, parse_budget
from .deep_forcing import DeepForcing
from .flowcache import FlowCache
from .full import Full
from .h2o import H2O
from .oracle import Oracle
from .packcache import PackCache
from .pafu import PaFu
from .random import Random
from .select import select, select_frames
from .sink import Sink
from .snapkv import SnapKV
from .tempcache import TempCache
from .tova import TOVA
from .window import Window

POLICIES: dict[str, tuple[Callable[..., Policy], str]] = {
    "full": (Full, "never evict: the reference (memory and time grow with every frame)"),
    "window": (Window, "Self-Forcing rolling window: prompt + the newest 16 frames, FIFO"),
    "sink": (Sink, "StreamingLLM / LongLive: first 3 frames pinned as a sink + the newest frames"),
    "deep_forcing": (
        DeepForcing,
        "Deep Forcing: deep sink (half the budget) + top q.k from the last 4 frames, contiguous RoPE",
    ),
    "h2o": (H2O, "H2O heavy hitters: normalised past attention + a 2-frame recent window"),
    "tova": (TOVA, "TOVA: attention from the newest chunk's queries, lowest dropped"),
    "snapkv": (SnapKV, "SnapKV: newest-chunk attention, 3x3 spatially pooled"),
    "flowcache": (FlowCache, "FlowCache: 0.07 x pooled attention - 0.93 x key redundancy"),
    "packcache": (PackCache, "PackCache: prompt anchors + per-frame budget ~ rho^distance, top tokens per frame"),
    "tempcache": (
        TempCache,
        "TempCache: when over budget, merge near-duplicate keys into the newest chunks (+log count), then FIFO",
    ),
    "oracle": (Oracle, "upper bound: hindsight attention from a full-cache reference run of the same seed"),
    "pafu": (
        PaFu,
        "PaFu-KV: learned salience head (distilled from teacher SSE), whole frames spread over time "
        "(the best of each span), first-frame sink, no attention read; alpha>0: mixed with past "
        "attention; granularity=frame: the top frames anywhere; granularity=token: single tokens; "
        "labels=hindsight: a head trained on the student's own future attention",
    ),
    "random": (Random, "random subset of the evictable tokens (lower bound)"),
}


# Display names (the registry keys are what the CLI and the API take)
TITLES = {
    "full": "Full cache",
    "window": "Sliding window",
    "sink": "Attention sink",
    "deep_forcing": "Deep Forcing",
    "h2o": "H2O",
    "tova": "TOVA",
    "snapkv": "SnapKV",
    "flowcache": "FlowCache",
    "packcache": "PackCache",
    "tempcache": "TempCache",
    "oracle": "Oracle (hindsight bound)",
    "pafu": "PaFu-KV",
    "random": "Random",
}


def title(name: str) -> str:
    """'pafu' -> 'PaFu-KV (pafu)': the display name with the id a command line takes."""
    return f"{TITLES.get(name, name)} ({name})"


# What a policy's commits must record (Policy.attention_stats): a short label and a sentence (CLI, explorer)
READS = {
    "none": ("-", "reads no attention: its commits run the fused kernel"),
    "logits": ("q.k", "reads raw q.k sums (one matrix-vector product beside the fused kernel)"),
    "probs": ("attn", "reads attention probabilities, materialised at every commit (part of its cost)"),
}


def reads(name: str) -> str:
    """The attention statistics the named policy reads with its default settings (a key of READS)."""
    return POLICIES[name][0]().attention_stats


def describe_reads(name: str) -> tuple[str, str]:
    """(short label, sentence) of what the named policy reads with its defaults, with its probe share when
    it forms the probabilities of only some of a commit's queries (CLI listing, explorer help)."""
    policy = POLICIES[name][0]()
    level, probe = policy.attention_stats, policy.probe
    short, sentence = READS[level]
    if level == "probs" and probe < 1:
        short = f"attn {probe:g}"
        sentence = (
            f"reads attention probabilities of {probe:.1%} of each commit's queries (ZipCache-style probes), "
            "formed beside the fused kernel at every commit (part of its cost)"
        )
    return short, sentence


def make_policy(name: str, **kwargs) -> Policy:
    """The named policy with these parameters; user parameters are checked first (params.check_params), so a
    bad one is a message naming it, never a Python internal. Builder-set fields (budget, head, reference)
    pass unchecked."""
    from .params import INTERNAL, check_params

    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    user = check_params(name, {k: v for k, v in kwargs.items() if k not in INTERNAL})
    try:
        return POLICIES[name][0](**{**kwargs, **user})
    except TypeError as e:
        raise ValueError(f"bad parameter for {title(name)}: {e}") from e


__all__ = [
    "POLICIES",
    "TITLES",
    "title",
    "READS",
    "reads",
    "describe_reads",
    "make_policy",
    "Policy",
    "EvictContext",
    "LayerEviction",
    "select",
    "select_frames",
    "Budget",
    "BudgetError",
    "parse_budget",
    "Full",
    "Window",
    "Sink",
    "H2O",
    "TOVA",
    "SnapKV",
    "Random",
    "FlowCache",
    "PackCache",
    "TempCache",
    "DeepForcing",
    "Oracle",
    "PaFu",
]
