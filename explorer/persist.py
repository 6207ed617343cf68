"""Runs <-> saved sessions. A run is stored as its record stream (`RunData.log`: every StepRecord, per-token
payloads kept whole where the history keeps a snapshot and thinned elsewhere, `record_log.py`) and reloads by
folding those records again into RunData that renders exactly as it did live. Computed-on-demand signals (the
teacher's) are stored beside it. Sessions written before the record stream (the history's arrays) still load.
"""

from __future__ import annotations

import numpy as np

from backend.record_io import pack_records, unpack_records

from .history import RunHistory
from .run import RunConfig, RunData
from .sessions import SessionError, SessionStore


def _dims(h: RunHistory) -> np.ndarray:
    return np.array(
        [h.n_layer, h.n_prompt, h.tokens_per_frame, h.grid, h.chunk_frames, h.n_frames, h.max_snapshots, h.budget]
        + [h.cols],
        np.int64,
    )


def save_runs(
    store: SessionStore,
    name: str,
    kind: str,
    datas: list[RunData],
    reference: int | None = None,
    meta: dict | None = None,
) -> str:
    """Save one run (kind 'run') or a comparison (kind 'compare'); returns the session id."""
    arrays = {}
    for i, d in enumerate(datas):
        h = d.history
        if d.log is None:  # reloaded from a session without a record stream: its arrays as they were
            arrays.update(_legacy_arrays(i, d))
            continue
        arrays[f"r{i}_dims"] = _dims(h)
        arrays[f"r{i}_shapes"] = np.array([d.frames.shape[1:], d.latents.shape[1:]], np.int64)
        arrays[f"r{i}_thinned"] = np.array(d.log.thinned, bool)
        for k, v in pack_records(d.log.records, h.n_layer).items():
            arrays[f"r{i}_rec_{k}"] = v
        for k, v in h.static.items():
            arrays[f"r{i}_static_{k}"] = v
    first = datas[0].config
    config = {
        "runs": [d.config.to_dict() for d in datas],
        "reference": reference,
        "prompt": first.prompt,
        "seed": first.seed,
        "frames": first.frames,
        "frames_done": min(d.frames_done for d in datas),
        "status": [d.status for d in datas],
    }
    return store.save(name, kind, config, arrays, meta)


def replay(config: RunConfig, arrays: dict, i: int) -> RunData:
    """Run `i` of a session, folded again from its record stream."""
    L, P, T, g, cf, n, max_snapshots, budget, cols = (int(x) for x in arrays[f"r{i}_dims"])
    hist = RunHistory(L, P, T, g, cf, n, max_snapshots=max_snapshots, budget=budget, cols=cols)
    shapes = arrays[f"r{i}_shapes"]
    data = RunData.empty(config, hist, tuple(int(x) for x in shapes[0]), tuple(int(x) for x in shapes[1]))
    prefix = f"r{i}_rec_"
    records = unpack_records({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
    for rec, thinned in zip(records, arrays[f"r{i}_thinned"]):
        data.add_record(rec, bool(thinned))
    hist.static = {k[len(f"r{i}_static_") :]: v for k, v in arrays.items() if k.startswith(f"r{i}_static_")}
    return data


def load_runs(store: SessionStore, sid: str) -> tuple[dict, list[RunData]]:
    """(session document, RunData per run); a session this code cannot read raises SessionError."""
    doc, arrays = store.load(sid)
    try:
        datas = []
        for i, cfg in enumerate(doc["config"]["runs"]):
            config = RunConfig(**cfg)
            data = replay(config, arrays, i) if f"r{i}_dims" in arrays else _legacy_run(config, arrays, i)
            status = (doc["config"].get("status") or [""] * (i + 1))[i]
            data.status = f"reloaded session {sid}: {status}"
            datas.append(data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SessionError(
            f"session {sid!r} is not an explorer run this version can read ({type(e).__name__}: {e})"
        ) from e
    if not datas:
        raise SessionError(f"session {sid!r} holds no runs")
    return doc, datas


def _legacy_arrays(i: int, d: RunData) -> dict[str, np.ndarray]:
    """A run without a record stream, as the history's arrays, frames, times and latents."""
    n = d.frames_done
    arrays = {f"r{i}_frames": d.frames[:n], f"r{i}_frame_ms": np.asarray(d.frame_ms[:n], np.float32)}
    if d.latents is not None:
        arrays[f"r{i}_latents"] = np.asarray(d.latents[:n], np.float16)
    for k, v in d.history.to_arrays().items():
        arrays[f"r{i}_h_{k}"] = v
    return arrays


def _legacy_run(config: RunConfig, arrays: dict, i: int) -> RunData:
    hist = RunHistory.from_arrays({k[len(f"r{i}_h_") :]: v for k, v in arrays.items() if k.startswith(f"r{i}_h_")})
    done = arrays[f"r{i}_frames"]
    frames = np.zeros((hist.n_frames, *done.shape[1:]), np.uint8)
    frames[: len(done)] = done
    ms = np.zeros(hist.n_frames)
    ms[: len(done)] = arrays[f"r{i}_frame_ms"]
    lat = arrays.get(f"r{i}_latents")
    latents = None
    if lat is not None:
        latents = np.zeros((hist.n_frames, *lat.shape[1:]), np.float32)
        latents[: len(lat)] = lat
    return RunData(config, frames, hist, ms, latents)
