"""Runs across saved sessions: one table row per run (a comparison holds several), and the PSNR and
occupancy curves of chosen runs drawn over each other.

A run's PSNR is against a full-cache run of the same prompt, seed, length, colour guidance and weights:
its comparison's reference, or else a saved full-cache run session that matches (same noise, so they
differ only by what the caches kept); with none, the PSNR cells stay blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.metrics import psnr_per_frame
from backend.records import PHASES

from .compare import run_metrics
from .figures import LAYER_COLOURS, _layout
from .persist import load_runs
from .run import RunData
from .sessions import SessionError, SessionInfo, SessionStore


@dataclass
class Entry:
    key: str  # "<session id>#<run index>"
    sid: str
    kind: str
    data: RunData
    weights: str  # the student's hash (runs match only under the same weights)
    reference: RunData | None = None

    @property
    def match(self) -> tuple:
        c = self.data.config
        return c.prompt, c.seed, c.frames, c.guidance, self.weights


class RunsIndex:
    """Loaded sessions by id (a saved session never changes: a new save gets a new id), so the table is built
    from disk once per session."""

    def __init__(self, store: SessionStore):
        self.store = store
        self._loaded: dict[str, list[Entry]] = {}

    def entries(self, progress=None) -> list[Entry]:
        infos = [s for s in self.store.list() if isinstance(s, SessionInfo)]
        self._loaded = {k: v for k, v in self._loaded.items() if k in {s.id for s in infos}}
        for i, s in enumerate(infos):
            if s.id in self._loaded:
                continue
            if progress:
                progress((i, len(infos)), desc="reading sessions")
            try:
                doc, datas = load_runs(self.store, s.id)
            except SessionError:
                continue  # listed as a problem on the Sessions tab
            ref = doc["config"].get("reference")
            weights = str((doc.get("meta") or {}).get("model_hash", ""))
            self._loaded[s.id] = [
                Entry(
                    f"{s.id}#{j}", s.id, doc["kind"], d, weights, datas[ref] if ref is not None and j != ref else None
                )
                for j, d in enumerate(datas)
            ]
        out = [e for s in infos for e in self._loaded.get(s.id, [])]
        full = {e.match: e.data for e in out if e.data.config.policy == "full"}
        for e in out:  # a run without its own reference: a matching full run
            if e.reference is None and e.data.config.policy != "full":
                e.reference = full.get(e.match)
        return out


def table(entries: list[Entry]) -> list[dict]:
    """One row per run: where it is saved, what it ran, and its metrics (explorer.compare.run_metrics)."""
    rows = []
    for e in entries:
        d, ref = e.data, e.reference
        n = d.frames_done if ref is None else min(d.frames_done, ref.frames_done)
        m = run_metrics(d, None if ref is None else ref.frames, n)
        if ref is None and d.config.policy != "full":
            m["PSNR vs full (dB)"] = m["SSIM vs full"] = float("nan")  # no reference: nothing to compare
        config = m.pop("config")  # what ran first, where it came from last
        rows.append(
            {
                "run": e.key,
                "config": config,
                **m,
                "budget tokens/layer": d.history.budget if d.history.budget > 0 else None,
                "seed": d.config.seed,
                "kind": e.kind,
                "prompt": d.config.prompt,
            }
        )
    return rows


def evictions(d: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Frames done (x) and KV MB over all layers just after each eviction (y): the occupancy the budget holds."""
    a = d.history.arrays()
    at = a["phase"] == PHASES.index("evict")
    frames = np.minimum((a["chunk"][at] + 1) * d.history.chunk_frames, d.history.n_frames)
    return frames, a["nbytes"][at].sum(1) / 1e6


def overlay_figures(entries: list[Entry], keys: list[str]) -> tuple[go.Figure, go.Figure]:
    """Per-frame PSNR against each run's full-cache reference, and KV MB after each eviction, for the chosen
    runs drawn over each other (one colour per run in both)."""
    chosen = [e for e in entries if e.key in keys]
    psnr, occ = go.Figure(), go.Figure()
    for i, e in enumerate(chosen):
        colour, name = LAYER_COLOURS[i % 8], f"{e.key}: {e.data.config.label}"
        if e.reference is not None:
            n = min(e.data.frames_done, e.reference.frames_done)
            y = psnr_per_frame(e.data.frames[:n], e.reference.frames[:n])
            psnr.add_trace(go.Scatter(x=np.arange(n), y=y, mode="lines", name=name, line=dict(color=colour)))
        x, mb = evictions(e.data)
        occ.add_trace(go.Scatter(x=x, y=mb, mode="lines", name=name, line=dict(color=colour, shape="hv")))
    psnr.update_xaxes(title_text="frame")
    psnr.update_yaxes(title_text="PSNR vs its full-cache run [dB]")
    occ.update_xaxes(title_text="frames generated")
    occ.update_yaxes(title_text="KV MB after each eviction (all layers)", rangemode="tozero")
    psnr = _layout(
        psnr,
        "per-frame PSNR against the full cache (same noise; 100 dB = identical; runs without a "
        "matching full-cache run are left out)",
        320,
    )
    occ = _layout(occ, "KV cache after each eviction", 320)
    for f in (psnr, occ):
        f.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.3, x=0))
    return psnr, occ
