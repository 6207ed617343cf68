"""Analysis actions (a mixin of controller.Explorer): the teacher's salience, the numbers beside the salience
pictures (explorer.numbers), and the runs across saved sessions (explorer.runs)."""

from __future__ import annotations

from backend.loading import load_model

from . import runs
from .state import Workspace

TEACHER_WINDOW = 48  # frames the teacher sees at once for the agreement numbers (the Teacher button's window)


class AnalysisActions:
    """The Explorer supplies models, model, ae, runs_index and shown_frame."""

    def _teacher(self):
        if self.teacher is None:
            path = self.models / "teacher.safetensors"
            if not path.is_file():
                raise ValueError(
                    f"no teacher.safetensors in {self.models}: train one with `python -m "
                    f"backend.train teacher --models-dir {self.models}`"
                )
            self.teacher = load_model(path)
        return self.teacher

    def teacher_salience(self, ws: Workspace, frame: int) -> str:
        with ws.lock:
            if ws.run is None or ws.run.data.frames_done == 0:
                raise ValueError("generate some frames first")
            ws.run.teacher_salience(self._teacher(), frame)
            return ws.run.data.status

    def salience_numbers(self, ws: Workspace, progress=None) -> tuple[list[dict], list[dict], str]:
        """Agreement of the policy's score with the teacher and the oracle per layer, and when each prompted
        object's tokens left the cache (explorer.numbers). Computes the teacher over every generated frame and
        the oracle's full-cache reference run of the same noise and length (kept with the run)."""
        from backend.build import reference_scores
        from backend.consistency import lost_objects, object_tracks

        from .numbers import agreement, dense_reference, departures

        with ws.lock:
            if ws.run is None or ws.run.data.frames_done == 0:
                raise ValueError("generate some frames first")
            run, d = ws.run, ws.run.data
            h, n = d.history, d.frames_done
            if progress:
                progress(0.1, desc="teacher salience over every frame")
            run.teacher_everywhere(self._teacher(), TEACHER_WINDOW)
            if d.oracle is None or d.oracle[0] != n:
                if progress:
                    progress(0.4, desc=f"oracle: a full-cache run of {n} frames (same noise)")
                cfg = d.config
                d.oracle = (n, reference_scores(self.model, self.ae, cfg.prompt, n, cfg.seed, cfg.sampler()))
            refs = {
                "teacher": dense_reference(h, per_frame_token=h.static["teacher"]),
                "oracle": dense_reference(h, per_id=d.oracle[1]),
            }
            rows = []
            per = {k: agreement(h, r) for k, r in refs.items()}
            for layer in range(h.n_layer):
                rows.append(
                    {
                        "layer": layer,
                        **{f"{k} {m}": per[k][layer][m] for k in refs for m in ("spearman", "top-25% recall")},
                        "evictions": per["teacher"][layer]["evictions"],
                    }
                )
            now = h.chunk_of(self.shown_frame(ws))
            tracks = object_tracks(d.done_frames(), d.config.prompt)
            objects = departures(h, tracks, d.frames.shape[1], now)
            scored = any(r["evictions"] for r in rows)
            note = (
                "Agreement over the tokens cached at each eviction, averaged over evictions (Spearman: rank "
                "correlation; top-25% recall: share of the reference's top quarter the policy also ranks "
                "in its top quarter). Objects: as of the scrubbed time (chunk " + str(now) + ")."
            )
            if not scored:
                note = "**No policy scores to compare**: nothing was evicted yet (or this policy never evicts). " + note
            weak = [t["label"] for t in lost_objects(tracks)]
            if weak:
                note += (
                    " **This video itself loses " + ", ".join(weak) + "** (found in under half the frames "
                    "where it should be visible): what the cache keeps of it matters little."
                )
            return rows, objects, note

    def runs_table(self, progress=None) -> tuple[list[dict], list[str]]:
        """Every run of every saved session, one row each (explorer.runs), and their keys."""
        entries = self.runs_index.entries(progress)
        return runs.table(entries), [e.key for e in entries]

    def runs_overlay(self, keys: list[str]):
        """(PSNR figure, occupancy figure) of the chosen runs (keys 'session#index'), drawn over each other."""
        entries = self.runs_index.entries()
        unknown = sorted(set(keys) - {e.key for e in entries})
        if unknown:
            raise ValueError(f"no saved run {unknown[0]!r}: build the runs table first (Refresh) and pick from it")
        if not keys:
            raise ValueError("pick one or more runs to overlay")
        return runs.overlay_figures(entries, keys)
