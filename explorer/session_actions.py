"""The Explorer's exports and saved sessions (a mixin of `controller.Explorer`): videos, frames and tables of a
run or a comparison into its session's exports/, and listing, loading, deleting and naming sessions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import export, views
from .compare import Comparison
from .persist import load_runs, save_runs
from .run import Run, RunData
from .sessions import SessionInfo, SessionProblem, sanitize_name
from .signals import SIGNALS
from .state import Workspace
from .views import parse_layer


class SessionActions:
    def export(
        self,
        ws: Workspace,
        what: str,
        kind: str,
        signal: str | None = None,
        layer: str = "mean",
        frame: int | None = None,
    ) -> Path:
        """Write an export of the run ('run') or the comparison ('compare') into its session's exports/."""
        if kind not in ("mp4", "gif", "png", "csv", "json", "zip"):
            raise ValueError(f"unknown export kind {kind!r}")
        with ws.lock:
            if what == "run":
                if ws.run is None or ws.run.data.frames_done == 0:
                    raise ValueError("nothing to export yet: generate some frames first")
                sid, datas = self.autosave(ws), [ws.run.data]
            elif what == "compare":
                if ws.compare is None or ws.compare.frames_done == 0:
                    raise ValueError("nothing to export yet: run a comparison first")
                sid, datas = self.autosave_compare(ws), ws.compare.datas
            else:
                raise ValueError(f"export what? 'run' or 'compare', got {what!r}")
            folder = self.store.path(sid) / "exports"
            stamp = time.strftime("%H%M%S")
            if kind == "zip":
                tmp = folder.parent.parent / ".exports"
                _clean_old(tmp, max_age_s=3600)
                return self.store.zip(sid, tmp / f"{sid}.zip")
            if kind in ("csv", "json"):
                return self._export_table(ws, what, datas, folder / f"metrics-{stamp}.{kind}")
            n = min(d.frames_done for d in datas)
            lay = parse_layer(layer, datas[0].history.n_layer)
            overlays = None
            sig = SIGNALS.get(signal) if signal else None
            if sig is not None:
                overlays = [np.stack([views.heatmap_values(d, signal, lay, t) for t in range(n)]) for d in datas]
            vids = [d.frames[:n] for d in datas]
            labels = [d.config.label for d in datas]
            kw = dict(
                overlays=overlays,
                vmin=sig.vmin if sig else 0,
                vmax=sig.vmax if sig else 1,
                signal_label=f"{sig.label}: {sig.unit}" if sig else "",
                cols=min(len(datas), 4),
            )
            if kind == "png":
                f = n - 1 if frame is None else int(np.clip(int(frame), 0, n - 1))
                img = export.comparison_frames(vids, labels, frame_range=(f, f + 1), **kw)[0]
                return export.write_png(img, folder / f"{what}-frame{f}-{stamp}.png")
            grid = export.comparison_frames(vids, labels, **kw)
            writer = export.write_mp4 if kind == "mp4" else export.write_gif
            return writer(grid, folder / f"{what}-{stamp}.{kind}", fps=12)

    def _export_table(self, ws, what, datas, path: Path) -> Path:
        """CSV: the metrics table (compare) or the occupancy log (run); JSON: both, with the configs."""
        occupancy = {d.config.label: _occupancy_rows(d) for d in datas}
        rows = ws.compare.metrics() if what == "compare" else occupancy[datas[0].config.label]
        if path.suffix == ".csv":
            return export.write_csv(rows, path)
        return export.write_json(
            {
                "runs": [d.config.to_dict() for d in datas],
                "rows": rows,
                "metrics": ws.compare.metrics() if what == "compare" else None,
                "occupancy": occupancy,
                "model_hash": self.model_hash,
            },
            path,
        )

    # ------------------------------------------------------------------ sessions
    def sessions(self) -> tuple[list[list], str]:
        rows, problems = [], []
        for s in self.store.list():
            if isinstance(s, SessionInfo):
                created = str(s.created).replace("T", " ")[:19]  # ISO -> "YYYY-MM-DD HH:MM:SS" (UTC)
                rows.append([s.id, s.kind, created, s.n_frames, s.summary])
            elif isinstance(s, SessionProblem):
                problems.append(f"- `{s.id}`: {s.problem}")
        note = (
            ("**Folders that are not readable sessions** (left untouched):\n" + "\n".join(problems)) if problems else ""
        )
        return rows, note

    def load_session(self, ws: Workspace, sid: str) -> str:
        """Reload a saved session into the workspace (renders without recomputing); returns its kind."""
        doc, datas = load_runs(self.store, sid)
        with ws.lock:
            if doc["kind"] == "compare":
                cmp = Comparison([Run(d) for d in datas], doc["config"].get("reference") or 0)
                ws.compare, ws.compare_saved = cmp, (sid, cmp.frames_done)
            else:
                ws.run, ws.run_saved, ws.token = Run(datas[0], None, self.head), (sid, datas[0].frames_done), None
            ws.scrub["compare" if doc["kind"] == "compare" else "run"].follow = True
        return doc["kind"]

    def delete_session(self, ws: Workspace, sid: str) -> None:
        self.store.delete(sid)
        with ws.lock:
            if ws.run_saved and ws.run_saved[0] == sid:
                ws.run_saved = None
            if ws.compare_saved and ws.compare_saved[0] == sid:
                ws.compare_saved = None

    def save_as(self, ws: Workspace, name: str) -> str:
        sanitize_name(name)
        with ws.lock:
            if ws.run is None or ws.run.data.frames_done == 0:
                raise ValueError("nothing to save yet: generate some frames first")
            return save_runs(self.store, name, "run", [ws.run.data], meta=self._meta())


def _occupancy_rows(d: RunData) -> list[dict]:
    """One row per backend step: phase, chunk, tokens per layer, KV bytes, tokens evicted, ms."""
    a = d.history.arrays()
    return [
        {
            "step": i,
            "phase": ("prefill", "denoise", "commit", "evict")[p],
            "chunk": c,
            **{f"tokens_L{layer}": int(a["occupancy"][i, layer]) for layer in range(d.history.n_layer)},
            "kv_bytes": int(a["nbytes"][i].sum()),
            "evicted": int(a["n_evicted"][i].sum()),
            "ms": float(a["ms"][i]),
        }
        for i, (p, c) in enumerate(zip(a["phase"], a["chunk"]))
    ]


def _clean_old(folder: Path, max_age_s: float) -> None:
    """Remove files older than max_age_s from a scratch folder (exported zips)."""
    if not folder.is_dir():
        return
    now = time.time()
    for f in folder.iterdir():
        if f.is_file() and now - f.stat().st_mtime > max_age_s:
            f.unlink(missing_ok=True)
