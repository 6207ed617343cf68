"""RunHistory: everything the explorer shows about one run, as plain numpy (saved and reloaded as is).

Filled step by step from the backend's StepRecords plus snapshots of the cache after each commit:
- the step log (phase, chunk, step, occupancy and bytes per layer, evictions, time),
- per layer and token, the chunk at which the token was evicted (-1 = never),
- salience snapshots: per layer, the ids of the cached tokens and their value under each signal
  (policy score, past attention, predicted salience), thinned to at most `max_snapshots` so memory stays
  bounded over any length (the newest snapshot is always exact),
- per token, its values under each signal at the time its own chunk was committed and evicted (`birth`):
  what the views show for a scrubbed frame, exact for every frame however much the snapshots are thinned,
- an optional static signal per token (teacher salience), computed on demand.

Token ids follow the cache (backend/cache.py): prompt slot p -> p, frame token -> n_prompt + frame * T + y * g + x.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from backend.records import PHASES

SNAP_SIGNALS = ("score", "attention", "predicted")  # values recorded per snapshot


@dataclass
class Snapshot:
    chunk: int
    ids: list[np.ndarray]  # per layer (n_l,) int64 token ids, cache order
    values: dict[str, list[np.ndarray | None]]  # signal -> per layer (n_l,) float32 or None


@dataclass
class RunHistory:
    n_layer: int
    n_prompt: int
    tokens_per_frame: int
    grid: int  # token rows per frame
    chunk_frames: int
    n_frames: int
    max_snapshots: int = 96
    budget: int = -1  # policy budget, tokens/layer (-1 = none)
    cols: int = 0  # token columns per frame (0: as many as rows, a square grid)
    # step log (one entry per StepRecord)
    phase: list[int] = field(default_factory=list)
    chunk: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    occupancy: list[np.ndarray] = field(default_factory=list)  # (L,) tokens
    nbytes: list[np.ndarray] = field(default_factory=list)  # (L,) bytes
    n_evicted: list[np.ndarray] = field(default_factory=list)  # (L,) tokens evicted by the step
    heads: list[np.ndarray | None] = field(default_factory=list)  # (L, H) tokens per head (per-head policies)
    ms: list[float] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    stride: int = 1  # chunks between kept older snapshots
    evicted_at: np.ndarray = None  # (L, N) chunk of eviction, -1 = never
    static: dict[str, np.ndarray] = field(default_factory=dict)  # signal -> (L, n_frames * T) float32
    birth: dict[str, np.ndarray] = field(default_factory=dict)  # signal -> (L, n_frames * T) float32, NaN =
    # no value when the token's chunk was made

    def __post_init__(self):
        self.cols = self.cols or self.grid
        if self.evicted_at is None:
            self.evicted_at = np.full((self.n_layer, self.n_tokens), -1, np.int32)

    @property
    def n_tokens(self) -> int:
        return self.n_prompt + self.n_frames * self.tokens_per_frame

    def token_id(self, frame: int, y: int, x: int) -> int:
        return self.n_prompt + frame * self.tokens_per_frame + y * self.cols + x

    def token_pos(self, tid: int) -> tuple[int, int, int]:
        """(frame, y, x) of a frame token id."""
        f, r = divmod(tid - self.n_prompt, self.tokens_per_frame)
        return f, r // self.cols, r % self.cols

    # ------------------------------------------------------------------ filling
    def add_record(self, rec, thinned: bool = False) -> None:
        """Fold one StepRecord in: the history is a pure fold over a run's records (live, or replayed from a
        session's log, where `thinned` records hold only their own chunk's tokens, scores as ranks:
        `record_log.thin`)."""
        snap = (
            commit_snapshot(rec)
            if rec.phase == "commit"
            else score_snapshot(rec, thinned)
            if rec.phase == "evict"
            else None
        )
        if snap is not None:
            self.add_snapshot(snap)
        self.phase.append(PHASES.index(rec.phase))
        self.chunk.append(rec.chunk)
        self.step.append(rec.step)
        self.occupancy.append(np.asarray(rec.occupancy, np.int64))
        self.nbytes.append(np.asarray(rec.nbytes, np.int64))
        self.heads.append(None if rec.heads is None else np.asarray(rec.heads, np.int64))
        self.ms.append(rec.ms)
        ev = np.zeros(self.n_layer, np.int64)
        if rec.evicted is not None:
            for layer, ids in enumerate(rec.evicted):
                ids = ids[(ids >= 0) & (ids < self.n_tokens)]
                self.evicted_at[layer, ids] = rec.chunk
                ev[layer] = len(ids)
        self.n_evicted.append(ev)

    def add_snapshot(self, snap: Snapshot) -> None:
        """Append the newest snapshot; older ones are thinned to every `stride`-th chunk when too many.
        The values of the snapshot's own chunk's tokens are kept for good in `birth`."""
        self._record_birth(snap)
        if self.snapshots and self.snapshots[-1].chunk == snap.chunk:
            old = self.snapshots.pop()  # same chunk (score arrives at evict): merge
            for k, v in old.values.items():
                if snap.values.get(k) is None:
                    snap.values[k] = v
        self.snapshots.append(snap)
        if len(self.snapshots) > self.max_snapshots:
            self.stride *= 2
            self.snapshots = _thin(self.snapshots[:-1], self.stride) + [self.snapshots[-1]]

    def _record_birth(self, snap: Snapshot) -> None:
        T, cf = self.tokens_per_frame, self.chunk_frames
        lo = self.n_prompt + snap.chunk * cf * T  # first token id of the chunk
        hi = min(lo + cf * T, self.n_tokens)
        for sig, per_layer in snap.values.items():
            if per_layer is None:
                continue
            arr = self.birth.get(sig)
            if arr is None:
                arr = self.birth[sig] = np.full((self.n_layer, self.n_frames * T), np.nan, np.float32)
            for layer, vals in enumerate(per_layer):
                if vals is None:
                    continue
                ids = snap.ids[layer]
                sel = (ids >= lo) & (ids < hi)
                arr[layer, ids[sel] - self.n_prompt] = vals[sel]

    def chunk_of(self, frame: int) -> int:
        return int(frame) // self.chunk_frames

    # ------------------------------------------------------------------ queries
    @property
    def n_steps(self) -> int:
        return len(self.phase)

    @property
    def chunks_done(self) -> int:
        """Chunks fully committed and evicted."""
        evict = PHASES.index("evict")
        return sum(1 for p in self.phase if p == evict)

    @property
    def frames_done(self) -> int:
        return min(self.chunks_done * self.chunk_frames, self.n_frames)

    def arrays(self) -> dict[str, np.ndarray]:
        """Step log as arrays: phase/chunk/step (S,), occupancy/nbytes/n_evicted (S, L), ms (S,)."""
        L = self.n_layer

        def stack(xs):
            return np.stack(xs) if xs else np.zeros((0, L), np.int64)

        out = {
            "phase": np.array(self.phase, np.int64),
            "chunk": np.array(self.chunk, np.int64),
            "step": np.array(self.step, np.int64),
            "occupancy": stack(self.occupancy),
            "nbytes": stack(self.nbytes),
            "n_evicted": stack(self.n_evicted),
            "ms": np.array(self.ms),
        }
        shape = next((x.shape for x in self.heads if x is not None), None)
        if shape is not None:  # (S, L, H), every head of a step without its own counts holding the layer's
            out["heads"] = np.stack(
                [np.broadcast_to(o[:, None], shape) if x is None else x for x, o in zip(self.heads, self.occupancy)]
            )
        return out

    def snapshot_at(self, chunk: int | None = None, signal: str | None = None) -> Snapshot | None:
        """The newest snapshot taken at or before `chunk` (None = the newest of all), or the newest of those
        that holds `signal`: the policy's score exists only at commits after which it evicted (every second
        chunk with `period=2`), so a view between evictions shows the scores that decided the last one."""
        best = None
        for s in self.snapshots:
            if (chunk is None or s.chunk <= chunk) and (signal is None or s.values.get(signal) is not None):
                best = s
        return best

    def frame_values(self, signal: str, frame: int, layer: int | None = None, chunk: int | None = None) -> np.ndarray:
        """(rows, cols) float32 values of one frame's tokens under a signal; NaN where the token has no value
        (not cached at that time, or a signal this run does not have). layer None = mean over layers.
        `chunk` None = now; the frame's own chunk = the values its tokens had when that chunk was committed and
        evicted (`birth`, exact at any length). A signal missing at another `chunk` comes from the newest
        earlier snapshot that has it (`snapshot_at`), for the tokens still cached at `chunk`."""
        T = self.tokens_per_frame
        base = self.n_prompt + frame * T
        layers = range(self.n_layer) if layer is None else [layer]
        out = np.full((len(layers), T), np.nan, np.float32)
        if signal in self.static:
            for i, l in enumerate(layers):
                out[i] = self.static[signal][l, frame * T : (frame + 1) * T]
        elif chunk is not None and chunk == self.chunk_of(frame):
            if signal in self.birth:
                for i, l in enumerate(layers):
                    out[i] = self.birth[signal][l, frame * T : (frame + 1) * T]
        else:
            snap, src = self.snapshot_at(chunk), self.snapshot_at(chunk, signal)
            if src is not None:
                for i, l in enumerate(layers):
                    ids, vals = src.ids[l], src.values[signal][l]
                    if vals is None:
                        continue
                    sel = (ids >= base) & (ids < base + T)
                    if src is not snap:  # only the tokens cached at `chunk`
                        sel &= np.isin(ids, snap.ids[l])
                    out[i, ids[sel] - base] = vals[sel]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            mean = np.nanmean(out, 0)
        return mean.reshape(self.grid, self.cols)

    def token_series(self, signal: str, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """Salience of one token over time: chunks (S,) and values (S, L) with NaN where not cached."""
        chunks = np.array([s.chunk for s in self.snapshots], np.int64)
        vals = np.full((len(self.snapshots), self.n_layer), np.nan, np.float32)
        for i, s in enumerate(self.snapshots):
            per_layer = s.values.get(signal)
            if per_layer is None:
                continue
            for l in range(self.n_layer):
                if per_layer[l] is None:
                    continue
                hit = np.nonzero(s.ids[l] == tid)[0]
                if len(hit):
                    vals[i, l] = per_layer[l][hit[0]]
        return chunks, vals

    def status(self, chunk: int | None = None) -> np.ndarray:
        """Cache map: (L, n_frames, T) int8 with 0 = not generated yet, 1 = cached, 2 = evicted, as of the
        end of `chunk` (None = now). Prompt anchors are reported separately (`prompt_status`)."""
        done = self.chunks_done if chunk is None else chunk + 1
        T = self.tokens_per_frame
        ev = self.evicted_at[:, self.n_prompt :].reshape(self.n_layer, self.n_frames, T)
        frame_chunk = (np.arange(self.n_frames) // self.chunk_frames)[None, :, None]
        born = frame_chunk < done
        gone = (ev >= 0) & (ev < done)
        out = np.where(born, np.where(gone, 2, 1), 0).astype(np.int8)
        return out

    def prompt_status(self, chunk: int | None = None) -> np.ndarray:
        """(L, n_prompt) int8: 3 = anchor still cached, 2 = evicted."""
        done = self.chunks_done if chunk is None else chunk + 1
        ev = self.evicted_at[:, : self.n_prompt]
        return np.where((ev >= 0) & (ev < done), 2, 3).astype(np.int8)

    def commit_step(self, frame: int) -> int | None:
        """Index of the step that committed `frame` (None if not yet)."""
        return self._step_of("commit", frame // self.chunk_frames)

    def evict_step(self, chunk: int) -> int | None:
        """Index of the eviction step after `chunk` was committed (None if not yet): the time a scrubbed
        frame of that chunk shows."""
        return self._step_of("evict", chunk)

    def _step_of(self, phase: str, chunk: int) -> int | None:
        p_idx = PHASES.index(phase)
        for i, (p, ch) in enumerate(zip(self.phase, self.chunk)):
            if p == p_idx and ch == chunk:
                return i
        return None

    # ------------------------------------------------------------------ save / load
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy dict (no pickles): step log, evictions, snapshots (ragged, with offsets), statics."""
        out = {f"log_{k}": v for k, v in self.arrays().items()}
        out["evicted_at"] = self.evicted_at
        out["dims"] = np.array(
            [
                self.n_layer,
                self.n_prompt,
                self.tokens_per_frame,
                self.grid,
                self.chunk_frames,
                self.n_frames,
                self.max_snapshots,
                self.stride,
                self.budget,
                self.cols,
            ],
            np.int64,
        )
        out["snap_chunk"] = np.array([s.chunk for s in self.snapshots], np.int64)
        lens = np.array([[len(s.ids[l]) for l in range(self.n_layer)] for s in self.snapshots], np.int64)
        out["snap_len"] = lens.reshape(len(self.snapshots), self.n_layer)
        flat = [ids for s in self.snapshots for ids in s.ids]
        out["snap_ids"] = np.concatenate(flat).astype(np.int64) if flat else np.zeros(0, np.int64)
        for sig in SNAP_SIGNALS:
            has = np.array(
                [
                    [s.values.get(sig) is not None and s.values[sig][l] is not None for l in range(self.n_layer)]
                    for s in self.snapshots
                ],
                bool,
            )
            vals = [
                s.values[sig][l] if h else np.full(len(s.ids[l]), np.nan, np.float32)
                for s, row in zip(self.snapshots, has)
                for l, h in enumerate(row)
            ]
            out[f"snap_has_{sig}"] = has.reshape(len(self.snapshots), self.n_layer)
            out[f"snap_{sig}"] = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
        for k, v in self.static.items():
            out[f"static_{k}"] = v
        for k, v in self.birth.items():
            out[f"birth_{k}"] = v
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> RunHistory:
        L, P, T, g, cf, n, ms, stride, budget, *cols = (int(x) for x in a["dims"])
        h = cls(
            L,
            P,
            T,
            g,
            cf,
            n,
            max_snapshots=ms,
            budget=budget,
            stride=stride,
            cols=cols[0] if cols else 0,
            evicted_at=np.array(a["evicted_at"], np.int32),
        )
        h.phase, h.chunk, h.step = (a[f"log_{k}"].tolist() for k in ("phase", "chunk", "step"))
        h.occupancy, h.nbytes, h.n_evicted = (list(a[f"log_{k}"]) for k in ("occupancy", "nbytes", "n_evicted"))
        h.ms = a["log_ms"].tolist()
        h.heads = list(a["log_heads"]) if "log_heads" in a else [None] * len(h.phase)
        off = 0
        for i, c in enumerate(a["snap_chunk"]):
            ids, vals = [], {s: [] for s in SNAP_SIGNALS}
            for l in range(L):
                k = int(a["snap_len"][i, l])
                ids.append(a["snap_ids"][off : off + k])
                for s in SNAP_SIGNALS:
                    vals[s].append(a[f"snap_{s}"][off : off + k] if a[f"snap_has_{s}"][i, l] else None)
                off += k
            h.snapshots.append(
                Snapshot(int(c), ids, {s: (v if any(x is not None for x in v) else None) for s, v in vals.items()})
            )
        h.static = {k[7:]: v for k, v in a.items() if k.startswith("static_")}
        h.birth = {k[6:]: np.array(v, np.float32) for k, v in a.items() if k.startswith("birth_")}
        if not h.birth:  # a session saved before `birth`: rebuilt from its snapshots
            for snap in h.snapshots:
                h._record_birth(snap)
        return h


def _thin(snapshots: list[Snapshot], stride: int) -> list[Snapshot]:
    """One snapshot per `stride` chunks, preferring one that holds the policy's score (recorded only at
    commits after which it evicted, which a chunk-parity rule could otherwise drop every time)."""
    out: dict[int, Snapshot] = {}
    for s in snapshots:
        b = s.chunk // stride
        if b not in out or (out[b].values.get("score") is None and s.values.get("score") is not None):
            out[b] = s
    return list(out.values())


def commit_snapshot(rec) -> Snapshot | None:
    """The recorded signals of every cached token after a commit, per layer (its record's ids and signals):
    past attention times the number of cached tokens on log2 (0 = what a token would get if all were equal),
    and the salience head's prediction. The number of cached tokens is the record's occupancy (a thinned
    record holds fewer ids)."""
    if rec.ids is None:
        return None
    sig = rec.signals or {}
    att = None
    if "attention" in sig:
        att = []
        for n, a in zip(rec.occupancy, sig["attention"]):
            with np.errstate(divide="ignore"):
                att.append(np.log2(np.maximum(a * max(int(n), 1), 1e-6)).astype(np.float32))
    pred = [p.astype(np.float32) for p in sig["predicted"]] if "predicted" in sig else None
    return Snapshot(rec.chunk, [i.copy() for i in rec.ids], {"attention": att, "predicted": pred})


def score_snapshot(rec, thinned: bool = False) -> Snapshot | None:
    """The policy's scores at an eviction, as ranks, aligned with the ids cached just before it (the record's);
    a thinned record's scores are ranks already."""
    from .signals import rank01

    if rec.scores is None or rec.ids is None or all(s is None for s in rec.scores):
        return None
    vals = [
        None
        if s is None or ids is None or len(s) != len(ids)
        else np.asarray(s, np.float32)
        if thinned
        else rank01(np.asarray(s, np.float64))
        for ids, s in zip(rec.ids, rec.scores)
    ]
    return Snapshot(rec.chunk, [i.copy() for i in rec.ids], {"score": vals})
