"""Registry of named, pre-configured cache policies (what the CLI, benchmark and UI list)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import EVICT_PERIOD, PROBE_SHARE, EvictContext, LayerEviction, Policy, Settings
from .budget import Budget, BudgetError, parse_budget
from .deep_forcing import DeepForcing
from .dummy_forcing import DummyForcing
from .fademem import FadeMem
from .flowcache import FlowCache
from .forcing_kv import ForcingKV
from .full import Full
from .h2o import H2O
from .memrope import MemRoPE
from .oracle import Oracle
from .packcache import PackCache
from .pafu import PaFu
from .random import Random
from .scorer import Scorer
from .select import Selector, select, select_frames
from .sink import Sink
from .snapkv import SnapKV
from .tempcache import TempCache
from .tova import TOVA
from .window import Window


@dataclass(frozen=True)
class Entry:
    """A registered policy: its scorer, the shared settings it changes from `Settings` (its selector, wrappers,
    probe share), and one line for listings."""

    scorer: type[Scorer]
    help: str
    settings: dict = field(default_factory=dict)

    def defaults(self) -> Settings:
        return Settings(**self.settings)


# docs/decisions/: "probe share" (PROBE_SHARE for the scorers that read attention probabilities) and
# "eviction period" (EVICT_PERIOD for H2O, TOVA, SnapKV, TempCache and PaFu-KV)
_PROBED = {"probe": PROBE_SHARE}
_PERIODIC = {"period": EVICT_PERIOD}

POLICIES: dict[str, Entry] = {
    "full": Entry(Full, "never evict: the reference (memory and time grow with every frame)"),
    "window": Entry(
        Window, "Self-Forcing rolling window: prompt + the newest 16 frames, FIFO", {"granularity": "frame"}
    ),
    "sink": Entry(
        Sink, "StreamingLLM / LongLive: first 3 frames pinned as a sink + the newest frames", {"granularity": "frame"}
    ),
    "deep_forcing": Entry(
        DeepForcing,
        "Deep Forcing: deep sink (half the budget) + top q.k from the last 4 frames, contiguous RoPE",
        {"rope": "reindex"},
    ),
    "h2o": Entry(H2O, "H2O heavy hitters: normalised past attention + a 2-frame recent window", _PROBED | _PERIODIC),
    "tova": Entry(TOVA, "TOVA: attention from the newest chunk's queries, lowest dropped", _PROBED | _PERIODIC),
    "snapkv": Entry(SnapKV, "SnapKV: newest-chunk attention, 3x3 spatially pooled", _PROBED | _PERIODIC),
    "flowcache": Entry(FlowCache, "FlowCache: 0.07 x pooled attention - 0.93 x key redundancy", _PROBED),
    "packcache": Entry(
        PackCache, "PackCache: prompt anchors + per-frame budget ~ rho^distance, top tokens per frame", _PROBED
    ),
    "tempcache": Entry(
        TempCache,
        "TempCache: when over budget, merge near-duplicate keys into the newest chunks (+log count), then FIFO",
        _PERIODIC,
    ),
    "oracle": Entry(Oracle, "upper bound: hindsight attention from a full-cache reference run of the same seed"),
    "pafu": Entry(
        PaFu,
        "PaFu-KV: learned salience head (distilled from teacher SSE), whole frames spread over time "
        "(the best of each span), first-frame sink, no attention read; alpha>0: mixed with past "
        "attention; granularity=frame: the top frames anywhere; granularity=token: single tokens; "
        "labels=hindsight: a head trained on the student's own future attention",
        {"granularity": "strata"} | _PERIODIC,
    ),
    "random": Entry(Random, "random subset of the evictable tokens (lower bound)"),
    "dummy_forcing": Entry(
        DummyForcing,
        "Dummy Forcing: heads programmed once as sink (frame 0), dummy (newest past frame) or neighbor (the "
        "newest frames the rest of the byte budget holds); per-head memory, packed attention",
        {"granularity": "frame"} | _PROBED,
    ),
    "forcing_kv": Entry(
        ForcingKV,
        "Forcing-KV: static heads keep frame 0 + the newest past frame; dynamic heads also the most changed "
        "segments of older frames (key similarity to the next frame); per-head memory",
        _PROBED,
    ),
    "admission": Entry(
        Window,
        "write-time admission (kvpress#257): each chunk's quarter of tokens most like what their grid cell "
        "already holds never enters; the newest tokens that fit",
        {"granularity": "token", "admit": 0.25},
    ),
    "memrope": Entry(
        MemRoPE,
        "MemRoPE: 3 sink frames + long- and short-term memory frames (EMA 0.01 / 0.1 of every evicted "
        "token) + the newest frames; contiguous RoPE",
        {"granularity": "frame", "rope": "reindex"},
    ),
    "fademem": Entry(
        FadeMem,
        "FadeMem: the newest 3 frames exact + a bank of frame entries, the adjacent pair closest in "
        "age^0.3 merged (dense near, sparse far); frame 0 an anchor",
        {"granularity": "frame"},
    ),
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
    "dummy_forcing": "Dummy Forcing",
    "forcing_kv": "Forcing-KV",
    "admission": "Write-time admission",
    "memrope": "MemRoPE",
    "fademem": "FadeMem",
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
    return make_policy(name).attention_stats


def describe_reads(name: str) -> tuple[str, str]:
    """(short label, sentence) of what the named policy reads with its defaults, with its probe share when
    it forms the probabilities of only some of a commit's queries (CLI listing, explorer help)."""
    policy = make_policy(name)
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
    """The named composition with these parameters: each goes to the part that takes it (the scorer's own
    settings, the shared `Settings`, the budget). User parameters are checked first (params.check_params), so
    a bad one is a message naming it, never a Python internal; builder-set ones (budget, head, reference) pass
    unchecked."""
    from .params import INTERNAL, check_params, split_settings

    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    entry = POLICIES[name]
    user = check_params(name, {k: v for k, v in kwargs.items() if k not in INTERNAL})
    kw = {**kwargs, **user}
    budget = kw.pop("budget", None)
    own, shared = split_settings(kw)
    try:
        scorer = entry.scorer(**own)
        settings = Settings(**{**entry.settings, **shared})
    except TypeError as e:
        raise ValueError(f"bad parameter for {title(name)}: {e}") from e
    return Policy(scorer, budget, settings, name)


__all__ = [
    "POLICIES",
    "TITLES",
    "title",
    "READS",
    "reads",
    "describe_reads",
    "make_policy",
    "Policy",
    "Settings",
    "Scorer",
    "Selector",
    "Entry",
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
    "DummyForcing",
    "ForcingKV",
    "MemRoPE",
    "FadeMem",
]
