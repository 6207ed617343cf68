"""Runs <-> saved sessions: a run or a comparison is stored as configs + flat numpy arrays and reloads into
RunData that renders exactly as it did live, without recomputing anything."""

from __future__ import annotations

import numpy as np

from .history import RunHistory
from .run import RunConfig, RunData
from .sessions import SessionError, SessionStore


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
        n = d.frames_done
        arrays[f"r{i}_frames"] = d.frames[:n]
        arrays[f"r{i}_frame_ms"] = np.asarray(d.frame_ms[:n], np.float32)
        if d.latents is not None:
            arrays[f"r{i}_latents"] = np.asarray(d.latents[:n], np.float16)
        for k, v in d.history.to_arrays().items():
            arrays[f"r{i}_h_{k}"] = v
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


def load_runs(store: SessionStore, sid: str) -> tuple[dict, list[RunData]]:
    """(session document, RunData per run); a session this code cannot read raises SessionError."""
    doc, arrays = store.load(sid)
    try:
        datas = []
        for i, cfg in enumerate(doc["config"]["runs"]):
            config = RunConfig(**cfg)
            hist = RunHistory.from_arrays(
                {k[len(f"r{i}_h_") :]: v for k, v in arrays.items() if k.startswith(f"r{i}_h_")}
            )
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
            status = (doc["config"].get("status") or [""] * (i + 1))[i]
            datas.append(RunData(config, frames, hist, ms, latents, None, f"reloaded session {sid}: {status}"))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SessionError(
            f"session {sid!r} is not an explorer run this version can read ({type(e).__name__}: {e})"
        ) from e
    if not datas:
        raise SessionError(f"session {sid!r} holds no runs")
    return doc, datas
