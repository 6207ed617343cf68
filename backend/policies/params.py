"""User-settable policy parameters: what each policy takes, of which type, range and unit, and a check that
turns a bad `KEY=VALUE` into a message a user can act on (never a Python internal).

A parameter is a field of the policy's scorer or of the shared `Settings` (its type comes from there, its
default from there or the registry entry); what the field
means, its range and unit are in `SPECS`, by name, because the same names recur across policies (probe,
period, recent_frames). The CLI, the benchmark and the explorer's typed forms all read this one table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

INTERNAL = {"budget", "head", "reference"}  # set by the builder, not by users


@dataclass(frozen=True)
class Spec:
    help: str
    lo: float | None = None  # numbers: inclusive bounds (None = open)
    hi: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()  # text: the allowed values (() = the policy checks)
    lo_open: bool = False  # the lower bound itself is not allowed (probe > 0)


def _choices():
    from ..cache import DTYPES, QUANT_SCHEMES
    from .layer_split import LAYER_SPLITS
    from .rope_modes import ROPE_MODES

    return dict(
        rope=tuple(ROPE_MODES),
        storage=tuple(DTYPES),
        salient_storage=tuple(DTYPES),
        quant=tuple(QUANT_SCHEMES),
        layer_split=tuple(LAYER_SPLITS),
    )


SPECS: dict[str, Spec] = {
    "granularity": Spec("keep single tokens, whole frames, or whole frames spread over time (strata)"),
    "rope": Spec("positions of kept keys: absolute, the sink shifted next to the window, or re-indexed"),
    "storage": Spec("dtype older frame tokens are stored at (KV quantisation, counted in byte budgets)"),
    "salient_storage": Spec("mixed precision: the most salient tokens stay at this dtype"),
    "salient_share": Spec("share of the quantised tokens kept at salient_storage", 0, 1, "share"),
    "quant": Spec("integer storage scheme: per channel (KIVI), per token, or after a Hadamard rotation"),
    "residual": Spec("newest frames before the newest chunk kept at fp32 (KIVI's residual)", 0, None, "frames"),
    "layer_split": Spec("how the total budget is split over layers"),
    "admit": Spec(
        "write-time admission: share of each chunk's tokens refused when committed (most redundant)", 0, 0.99, "share"
    ),
    "probe": Spec(
        "share of a commit's queries whose attention probabilities are formed (ZipCache probes)",
        0,
        1,
        "share",
        lo_open=True,
    ),
    "period": Spec(
        "evict once over budget, down to period - 1 chunks below it (the keep runs every period chunks)",
        1,
        None,
        "chunks",
    ),
    "frames": Spec("frames the window keeps", 1, None, "frames"),
    "sink_frames": Spec("first frames pinned as a sink", 0, None, "frames"),
    "recent_frames": Spec("newest frames always kept", 0, None, "frames"),
    "recent_share": Spec("share of the budget's frames kept as a recency window", 0, 1, "share"),
    "alpha": Spec(
        "weight of past attention against the head's predicted salience (0 = the head alone)", 0, 1, "weight"
    ),
    "labels": Spec(
        "which salience head: sse (the paper's teacher labels) or hindsight (our variant)", choices=("sse", "hindsight")
    ),
    "lam": Spec("weight of pooled attention against key redundancy", 0, 1, "weight"),
    "kernel": Spec("side of the spatial pooling window", 1, None, "tokens"),
    "within": Spec("how tokens are ranked within a frame", choices=("attention", "grid")),
    "rho_min": Spec("smallest cross-frame decay of the per-frame budget", 0, 1, "ratio"),
    "rho_max": Spec("largest cross-frame decay of the per-frame budget", 0, 1, "ratio"),
    "threshold": Spec("cosine similarity above which keys are merged", -1, 1, "cosine"),
    "merge_at": Spec("merge at every commit or only when the keep runs", choices=("commit", "evict")),
    "seed": Spec("seed of the random subset", 0, None, ""),
    "dummy_share": Spec(
        "share of all heads made dummy heads (no history: the newest past frame only)", 0, 0.99, "share"
    ),
    "static_at": Spec("share of a head's non-sink attention on the newest frames that makes it static", 0, 1, "share"),
    "long_rate": Spec("EMA rate of the long-term memory stream", 0, 1, "rate", lo_open=True),
    "short_rate": Spec("EMA rate of the short-term memory stream", 0, 1, "rate", lo_open=True),
    "per_position": Spec("memory streams average the evicted tokens per grid cell (else one vector per head)"),
    "window": Spec("newest frames kept exact", 1, None, "frames"),
    "beta": Spec(
        "age warp of the merge schedule (age^beta; smaller merges old entries sooner)", 0, 1, "exponent", lo_open=True
    ),
    "gamma": Spec("merge weight of an entry: span^gamma", 0, 1, "exponent"),
    "segments": Spec("horizontal bands a frame is cut into (dynamic heads keep the most changed)", 1, None, "bands"),
}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # int | float | str | bool
    default: object
    spec: Spec
    optional: bool = False  # None is allowed (salient_storage)

    @property
    def choices(self) -> tuple[str, ...]:
        return self.spec.choices or _choices().get(self.name, ())


def _kind(f: dataclasses.Field) -> tuple[str, bool]:
    t = str(f.type).replace(" ", "")
    optional = "None" in t
    for k in ("bool", "int", "float", "str"):
        if t.split("|")[0] == k:
            return k, optional
    return type(f.default).__name__, optional


def _fields(cls, defaults: dict) -> list[tuple[dataclasses.Field, object]]:
    """The user-settable fields of a dataclass, each with its default (or the one in `defaults`)."""
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_") or f.name in INTERNAL or f.default is dataclasses.MISSING:
            continue
        out.append((f, defaults.get(f.name, f.default)))
    return out


def parameters(name: str) -> dict[str, Param]:
    """Every user-settable parameter of the named policy: its scorer's own settings and the shared `Settings`
    (selector, wrappers, probe share, storage) with the defaults of its registry entry."""
    from . import POLICIES
    from .base import Settings

    entry = POLICIES[name]
    out = {}
    for f, default in _fields(entry.scorer, {}) + _fields(Settings, entry.settings):
        kind, optional = _kind(f)
        spec = SPECS.get(f.name, Spec(""))
        if f.name == "granularity":
            spec = dataclasses.replace(spec, choices=tuple(entry.scorer.granularities))
        out[f.name] = Param(f.name, kind, default, spec, optional)
    return out


def split_settings(params: dict) -> tuple[dict, dict]:
    """(the scorer's own, the shared `Settings`) of a policy's parameters."""
    from .base import Settings

    shared = {f.name for f in dataclasses.fields(Settings)}
    return {k: v for k, v in params.items() if k not in shared}, {k: v for k, v in params.items() if k in shared}


def is_own(p: Param) -> bool:
    """A policy's own parameter: one of its scorer's settings, or a shared one whose default its registry
    entry changes (PaFu-KV's granularity)."""
    from .base import Settings

    shared = Settings.__dataclass_fields__.get(p.name)
    return shared is None or shared.default != p.default


def check_params(name: str, params: dict) -> dict:
    """The parameters as the policy takes them ('none' -> None where allowed); raises ValueError naming the
    parameter, what it takes and what it got, for any key the policy does not take or any value of the wrong
    type, out of range or not among the choices."""
    from . import title

    known = parameters(name)
    out = {}
    for key, value in params.items():
        p = known.get(key)
        if p is None:
            raise ValueError(f"unknown parameter {key!r} for {title(name)}; it takes: {', '.join(sorted(known))}")
        _check_value(p, value)
        out[key] = None if isinstance(value, str) and value.lower() == "none" else value
    return out


def _check_value(p: Param, v) -> None:
    def bad(what: str):
        raise ValueError(f"{p.name} must be {what}, got {v!r}" + (f" ({p.spec.help})" if p.spec.help else ""))

    if v is None or (isinstance(v, str) and v.lower() == "none"):
        if p.optional:
            return
        bad("set (it has no 'none')")
    if p.kind == "bool":
        if not isinstance(v, bool):
            bad("true or false")
        return
    if p.kind in ("int", "float"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (p.kind == "int" and not isinstance(v, int)):
            bad("a whole number" if p.kind == "int" else "a number")
        s = p.spec
        if (s.lo is not None and (v < s.lo or (s.lo_open and v == s.lo))) or (s.hi is not None and v > s.hi):
            lo = "" if s.lo is None else f"{'>' if s.lo_open else '>='} {s.lo:g}"
            hi = "" if s.hi is None else f"<= {s.hi:g}"
            bad(" and ".join(x for x in (lo, hi) if x) + (f" [{s.unit}]" if s.unit else ""))
        return
    if not isinstance(v, str):
        bad("one of " + ", ".join(p.choices) if p.choices else "text")
    if p.choices and v not in p.choices:
        bad("one of " + ", ".join(p.choices))
