"""The record stream a session persists, bounded as the history is.

Every StepRecord of a run is kept (its scalars, commit frames and latents, evicted ids), but the per-token
payloads (cached ids with their signals, eviction scores, kept ids), which grow with the cache at every commit,
are kept whole only for the chunks whose snapshots the history keeps (`RunHistory.snapshots`, thinned to at
most `max_snapshots`). Any other record is thinned to the tokens of its own chunk, with its eviction scores
as their ranks among all tokens scored: exactly what the history keeps of it (`birth`). Denoise previews are
dropped (the live view shows the newest only). Replaying the log (`fold`) rebuilds the same history, frames and
timings as the live run (tested).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backend.records import StepRecord, _frozen

from .signals import rank01


def _has_payload(rec: StepRecord) -> bool:
    return any(getattr(rec, f) is not None and any(x is not None for x in getattr(rec, f)) for f in ("ids", "kept"))


def thin(rec: StepRecord, n_prompt: int, tokens_per_frame: int, chunk_frames: int) -> StepRecord:
    """The record with its per-token payloads cut to its own chunk's tokens (eviction scores as ranks among
    all tokens scored, computed before the cut) and no kept ids."""
    lo = n_prompt + rec.chunk * chunk_frames * tokens_per_frame
    hi = lo + chunk_frames * tokens_per_frame
    if rec.ids is None:
        return dataclasses.replace(rec, kept=None)
    sel = [None if ids is None else (ids >= lo) & (ids < hi) for ids in rec.ids]

    def cut(values, ranked=False):
        if values is None:
            return None
        out = []
        for v, ids, s in zip(values, rec.ids, sel):
            if v is None or s is None or len(v) != len(ids):
                out.append(None)
                continue
            out.append(_frozen((rank01(np.asarray(v, np.float64)) if ranked else v)[s]))
        return tuple(out)

    signals = None if rec.signals is None else {k: cut(v) for k, v in rec.signals.items()}
    ids = tuple(None if i is None else _frozen(i[s]) for i, s in zip(rec.ids, sel))
    return dataclasses.replace(rec, ids=ids, signals=signals, scores=cut(rec.scores, ranked=True), kept=None)


class RecordLog:
    """A run's records as persisted: whole where the history keeps their snapshot, thinned elsewhere."""

    def __init__(self, n_prompt: int, tokens_per_frame: int, chunk_frames: int):
        self.geometry = (n_prompt, tokens_per_frame, chunk_frames)
        self.records: list[StepRecord] = []
        self.thinned: list[bool] = []
        self._whole: set[int] = set()  # indices of records still holding whole payloads

    def add(self, rec: StepRecord, keep_chunks: set[int], thinned: bool = False) -> None:
        """Append a record (`thinned`: one replayed from a log, thinned already); then thin every whole record
        whose chunk the history no longer keeps a snapshot of (`keep_chunks`, after the history folded `rec`)."""
        if rec.phase == "denoise" and rec.preview is not None:
            rec = dataclasses.replace(rec, preview=None)
        self.records.append(rec)
        self.thinned.append(thinned)
        if not thinned and _has_payload(rec):
            self._whole.add(len(self.records) - 1)
        for i in [i for i in self._whole if self.records[i].chunk not in keep_chunks]:
            self.records[i] = thin(self.records[i], *self.geometry)
            self.thinned[i] = True
            self._whole.discard(i)
