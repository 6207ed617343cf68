"""A stream of StepRecords as flat numpy arrays and back (sessions persist runs this way; `np.savez` needs no
pickles): per-step scalars as (S,) / (S, L) arrays, and every ragged per-layer payload (token ids, scores,
signals, evicted ids) as one flat array with its lengths and a presence mask. `unpack_records(pack_records(r))`
gives records equal to r field by field."""

from __future__ import annotations

import numpy as np

from .records import PHASES, StepRecord, _frozen

LAYERED = ("kept", "evicted", "scores", "ids")  # tuple-per-layer fields of a record
STACKED = ("preview", "latents", "heads")  # one array per record (or None), stacked along the first axis


def pack_records(records: list[StepRecord], n_layer: int) -> dict[str, np.ndarray]:
    """Flat arrays of a record stream (see the module docstring); `n_layer` fixes the (S, L) shapes."""
    S, L = len(records), n_layer
    out = {
        "phase": np.array([PHASES.index(r.phase) for r in records], np.int64),
        "index": np.array([r.index for r in records], np.int64),
        "chunk": np.array([r.chunk for r in records], np.int64),
        "step": np.array([r.step for r in records], np.int64),
        "t": np.array([np.nan if r.t is None else r.t for r in records], np.float64),
        "frames": np.array([r.frames for r in records], np.int64).reshape(S, 2),
        "ms": np.array([r.ms for r in records], np.float64),
        "stats_ms": np.array([r.stats_ms for r in records], np.float64),
        "occupancy": np.array([r.occupancy for r in records], np.int64).reshape(S, L),
        "nbytes": np.array([r.nbytes for r in records], np.int64).reshape(S, L),
    }
    for name in LAYERED:
        out.update(_pack_layered(name, [getattr(r, name) for r in records], L))
    signals = sorted({k for r in records for k in (r.signals or {})})
    out["signal_names"] = np.array(signals, dtype=np.str_)
    for k in signals:
        out.update(_pack_layered(f"signal_{k}", [(r.signals or {}).get(k) for r in records], L))
    for name in STACKED:
        arrays = [getattr(r, name) for r in records]
        has = np.array([a is not None for a in arrays], bool)
        out[f"{name}_len"] = np.array([0 if a is None else len(a) for a in arrays], np.int64)
        kept = [a for a in arrays if a is not None]
        out[name] = np.concatenate(kept) if kept else np.zeros(0)
        out[f"{name}_has"] = has
    timed = [i for i, r in enumerate(records) if r.timings is not None]
    out["timings_at"] = np.array(timed, np.int64)
    for i in timed:
        for k, v in records[i].timings.items():
            out[f"timing{i}_{k}"] = v
    return out


def unpack_records(a: dict[str, np.ndarray]) -> list[StepRecord]:
    """The records of `pack_records`' arrays; raises KeyError / ValueError on arrays it did not write."""
    S, L = a["occupancy"].shape if a["occupancy"].ndim == 2 else (0, 0)
    layered = {name: _unpack_layered(a, name, S, L) for name in LAYERED}
    signals = {str(k): _unpack_layered(a, f"signal_{k}", S, L) for k in a["signal_names"]}
    stacked = {name: _unstack(a, name) if name in a else [None] * S for name in STACKED}  # older: no heads
    timings = {int(i): {} for i in a["timings_at"]}
    for key, v in a.items():
        if key.startswith("timing") and key != "timings_at":
            i, k = key[len("timing") :].split("_", 1)
            timings[int(i)][k] = v
    out = []
    for s in range(S):
        sig = {k: v[s] for k, v in signals.items() if v[s] is not None}
        t = float(a["t"][s])
        out.append(
            StepRecord(
                int(a["index"][s]),
                PHASES[int(a["phase"][s])],
                int(a["chunk"][s]),
                int(a["step"][s]),
                None if np.isnan(t) else t,
                (int(a["frames"][s, 0]), int(a["frames"][s, 1])),
                stacked["preview"][s],
                _frozen(a["occupancy"][s]),
                _frozen(a["nbytes"][s]),
                layered["kept"][s],
                layered["evicted"][s],
                layered["scores"][s],
                float(a["ms"][s]),
                float(a["stats_ms"][s]),
                layered["ids"][s],
                sig or None,
                {k: _frozen(v) for k, v in timings[s].items()} if s in timings else None,
                stacked["latents"][s],
                stacked["heads"][s],
            )
        )
    return out


def _pack_layered(name: str, values: list, L: int) -> dict[str, np.ndarray]:
    """values: per record None or a tuple of L (arrays or None) -> presence (S,) and (S, L), lengths (S, L),
    the concatenated data."""
    S = len(values)
    rec_has = np.array([v is not None for v in values], bool)
    has = np.zeros((S, L), bool)
    lens = np.zeros((S, L), np.int64)
    parts = []
    for s, v in enumerate(values):
        for layer, x in enumerate(v or ()):
            if x is not None:
                has[s, layer], lens[s, layer] = True, len(x)
                parts.append(x)
    data = np.concatenate(parts) if parts else np.zeros(0)
    return {f"{name}_rec": rec_has, f"{name}_has": has, f"{name}_len": lens, name: data}


def _unpack_layered(a: dict, name: str, S: int, L: int) -> list:
    rec_has, has, lens, data = a[f"{name}_rec"], a[f"{name}_has"], a[f"{name}_len"], a[name]
    ends = np.cumsum(lens.reshape(-1)).reshape(S, L) if S else lens
    out = []
    for s in range(S):
        if not rec_has[s]:
            out.append(None)
            continue
        out.append(
            tuple(
                _frozen(data[ends[s, layer] - lens[s, layer] : ends[s, layer]]) if has[s, layer] else None
                for layer in range(L)
            )
        )
    return out


def _unstack(a: dict, name: str) -> list:
    has, lens, data = a[f"{name}_has"], a[f"{name}_len"], a[name]
    ends = np.cumsum(lens)
    return [_frozen(data[e - n : e]) if h else None for h, n, e in zip(has, lens, ends)]
