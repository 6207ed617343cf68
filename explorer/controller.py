"""Explorer: the actions behind every button, as plain Python on a Workspace (the UI wires them to Gradio;
tests call them directly). Every action validates its input first and raises ValueError with a clear
message; nothing of an existing run is lost when an input is rejected."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.kinds import model_kind
from backend.loading import MODELS_DIR, file_hash, folder_student, load_head, student_and_ae
from backend.salience import head_file

from . import figures, views
from .analysis import AnalysisActions
from .compare_actions import CompareActions
from .persist import save_runs
from .run import Run, RunConfig, RunData
from .runs import RunsIndex
from .session_actions import SessionActions
from .sessions import SessionStore
from .signals import SIGNALS
from .state import Registry, Workspace
from .views import parse_layer

BUDGET_UNITS = {"frames": "f", "tokens": "", "% of full": "%", "KB": "KB"}


def budget_text(value, unit: str, policy: str) -> str:
    """Slider value + unit -> budget text for the backend ('' for the full cache)."""
    if policy == "full":
        return ""
    if unit not in BUDGET_UNITS:
        raise ValueError(f"unknown budget unit {unit!r}; use one of {', '.join(BUDGET_UNITS)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"budget must be a number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"budget must be positive, got {value!r} {unit}")
    return f"{v:g}{BUDGET_UNITS[unit]}"


@dataclass
class View:
    """Everything the Generate tab shows, for one frame of the workspace's run."""

    frame_img: np.ndarray
    preview_img: np.ndarray
    heat_img: np.ndarray
    cache_img: np.ndarray
    occupancy: object
    status: str
    frame: int
    frames_done: int
    hover: dict = field(default_factory=dict)  # per-token facts of the shown frame, for hover tooltips


@dataclass
class Explorer(CompareActions, AnalysisActions, SessionActions):
    store: SessionStore = field(default_factory=SessionStore)
    registry: Registry = field(default_factory=Registry)
    model: object = None
    ae: object = None
    head: object = None
    teacher: object = None
    model_hash: str = ""
    models: Path = MODELS_DIR  # the weights folder: the shipped one, or a training run's --models-dir
    kind: str = "world"  # the kind of generator served (backend.kinds): world | wan
    model_args: tuple[str, ...] = ()  # the CLI arguments that load the served generator (not the world's)
    teacher_loader: object = None  # () -> the bidirectional teacher, for generators whose teacher is no file here
    meta_model: dict = field(default_factory=dict)  # what saved sessions record of the served generator

    def __post_init__(self):
        self.runs_index = RunsIndex(self.store)
        self.models = Path(self.models)
        model_kind(self.kind)  # rejects unknown kinds
        if self.model is None and self.kind != "world":
            raise ValueError(f"a {self.kind} generator is served through explorer.serving (e.g. wan_explorer)")
        if self.model is None:
            student = folder_student(self.models)
            self.model, self.ae = student_and_ae(str(student))  # the folder's autoencoder, else the shipped
            self.model_hash = file_hash(student)
        if self.head is None:
            try:
                self.head = load_head(self.models / head_file("sse"))
            except FileNotFoundError:  # no head in the folder: the `predicted` signal is simply absent
                self.head = None

    @property
    def world(self) -> bool:
        """Whether the served model is the procedural world's (its grammar, guidance and evaluator apply)."""
        return model_kind(self.kind).world

    @property
    def custom_models(self) -> Path | None:
        """The weights folder when it is not the shipped one (its heads then score PaFu-KV), else None. A
        generator other than the world's always scores with its own folder's heads, never the shipped ones."""
        if not self.world:
            return self.models
        return None if self.models.resolve() == MODELS_DIR else self.models

    def cli(self, config: RunConfig) -> str:
        """The command line that makes this run with `python -m backend generate`: the served generator's
        arguments, or a world student's file when it is not the shipped one."""
        args = self.model_args
        if self.world and self.custom_models is not None:
            args = ("--model", str(self.custom_models / "student.safetensors"))
        return config.cli(args)

    def ws(self, key: str | None) -> Workspace:
        return self.registry.get(key)

    # ------------------------------------------------------------------ generate
    def _new_run(self, ws: Workspace, config: RunConfig, progress=None) -> Run:
        """A new run replaces the workspace's; a run that was neither finished, stopped nor saved is dropped
        (runs are saved on completion, on Stop and on demand, never on abandon) and the status says so."""
        old = ws.run
        run = Run.start(config, self.model, self.ae, self.head, progress, self.custom_models)
        if old is not None and old.frames_done and not ws.run_saved:
            run.data.notice = f"the previous run ({old.frames_done} frames, not saved) was replaced"
        ws.run, ws.run_saved, ws.token = run, None, None
        ws.scrub["run"].follow = True
        return run

    def ensure_run(self, ws: Workspace, config: RunConfig, progress=None) -> Run:
        """The workspace's run when it can go on with this config (also after Stop: Stop pauses), else a new
        one (none yet, finished, or the config changed)."""
        config.validate()
        if config.model != self.kind:
            raise ValueError(f"this explorer serves the {self.kind} model; a {config.model} run cannot be made here")
        if ws.run is None or ws.run.finished or ws.run.data.config != config:
            return self._new_run(ws, config, progress)
        ws.run.pause_requested = False
        return ws.run

    def step(self, ws: Workspace, config: RunConfig) -> None:
        with ws.lock:
            self.ensure_run(ws, config).step()
            ws.scrub["run"].follow = True
            self._autosave_if_done(ws)

    def step_frame(self, ws: Workspace, config: RunConfig) -> None:
        with ws.lock:
            self.ensure_run(ws, config).step_frame()
            ws.scrub["run"].follow = True
            self._autosave_if_done(ws)

    def run_iter(self, ws: Workspace, config: RunConfig, every_s: float = 0.25, progress=None):
        """Generate to the end, continuing the live run when the config is the same (a paused one too),
        yielding at most every `every_s`; Stop pauses it between frames and it is saved then."""
        with ws.lock:
            run = self.ensure_run(ws, config, progress)
            ws.scrub["run"].follow = True
        yield from self._stream(ws, "run", run, lambda: ws.run is run, lambda: self.autosave(ws), every_s, progress)

    @staticmethod
    def _stream(ws: Workspace, what: str, target, is_current, save, every_s: float, progress=None):
        """Step `target` (a Run or a Comparison) a frame at a time to the end, yielding it at most every
        `every_s`; ends early when Stop pauses it or it is replaced; saves at the end or the pause; always
        yields last."""
        last = 0.0
        ws.streaming.add(what)
        try:
            while True:
                with ws.lock:
                    if target.finished or target.pause_requested or not is_current():
                        break
                    target.step_frame()
                    if progress is not None:
                        progress((target.frames_done, target.n_frames), desc="frames")
                if time.perf_counter() - last >= every_s:
                    last = time.perf_counter()
                    yield target
            with ws.lock:
                if is_current():
                    save()
        finally:
            ws.streaming.discard(what)
        yield target

    def stop(self, ws: Workspace, what: str = "run") -> bool:
        """Stop = pause, between frames: Run (or Step) continues the same run. A streaming run is saved by its
        stream when it pauses; one driven by Step is saved here. Returns whether a stream will report it."""
        target = ws.run if what == "run" else ws.compare
        if target is None:
            return False
        target.stop()  # a flag read between frames: no lock
        if what in ws.streaming:
            return True
        with ws.lock:
            self.autosave(ws) if what == "run" else self.autosave_compare(ws)
        return False

    def reset(self, ws: Workspace) -> None:
        """Drop the run (not saved unless it finished, was stopped or saved) and the drill-down."""
        with ws.lock:
            if ws.run is not None:
                ws.run.abort()
            ws.run, ws.run_saved, ws.token = None, None, None
            ws.scrub["run"].follow = True

    def _autosave_if_done(self, ws: Workspace) -> None:
        if ws.run is not None and ws.run.finished:
            self.autosave(ws)

    def autosave(self, ws: Workspace) -> str | None:
        """Save the run if it has frames not yet saved (replacing this run's older save); its session id."""
        run = ws.run
        if run is None or run.data.frames_done == 0:
            return ws.run_saved[0] if ws.run_saved else None
        n = run.data.frames_done
        if ws.run_saved and ws.run_saved[1] == n:
            return ws.run_saved[0]
        if ws.run_saved:  # replace the older save of the same run
            try:
                self.store.delete(ws.run_saved[0])
            except ValueError:
                pass
        sid = save_runs(self.store, _auto_name(run.data.config), "run", [run.data], meta=self._meta())
        ws.run_saved = (sid, n)
        return sid

    def _meta(self) -> dict:
        meta = {"model_hash": self.model_hash, "model": "student.safetensors"} | self.meta_model
        return meta | ({"models": str(self.custom_models)} if self.custom_models else {})

    # ------------------------------------------------------------------ views
    def view(
        self,
        ws: Workspace,
        frame: int | None,
        signal: str,
        layer: str,
        cmap: str = "inferno",
        alpha: float = 0.6,
        gamma: float = 1.0,
    ) -> View:
        """Every Generate view at one time: frame `frame` (clamped to the frames made; None = the newest),
        just after its chunk was committed and evicted: the frame, its tokens' salience then, the cache map
        then, the timeline's marker at that eviction, the drill-down's cyan line."""
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
        with ws.lock:
            run = ws.run
            if run is None:
                return self._empty_view()
            d = run.data
            h = d.history
            n = d.frames_done
            f = n - 1 if frame is None else int(np.clip(int(frame), 0, max(n - 1, 0)))
            f = max(f, 0)
            chunk = h.chunk_of(f) if n else None
            lay = parse_layer(layer, h.n_layer)
            mark = None
            if ws.token is not None:
                tf, ty, tx = h.token_pos(ws.token)
                mark = (ty, tx) if tf == f else None
            step = h.evict_step(chunk) if n else None
            budget = h.budget if h.budget > 0 else None
            note = views.no_values_note(d, signal, f) if n else ""
            return View(
                views.frame_view(d, f),
                views.frame_view(d, f, preview=True),
                views.heatmap_view(d, signal, lay, f, cmap, alpha, gamma, mark, note),
                views.cache_map(h, chunk=chunk, frame=f if n else None, token=ws.token),
                figures.occupancy_figure(h, budget, step, f"KV cache occupancy: {d.config.label}"),
                self._status(ws, d, signal, f, note),
                f,
                n,
                views.hover_data(d, signal, f) if n else {},
            )

    def _empty_view(self) -> View:
        blank = np.full((256, 256, 3), 245, np.uint8)
        return View(
            blank,
            blank,
            blank,
            blank,
            figures.occupancy_figure(_empty_history()),
            "No run yet: set a prompt, a policy and a budget, then **Step**, **Step frame** or **Run**.",
            0,
            0,
        )

    def _status(self, ws: Workspace, d: RunData, signal: str, frame: int | None = None, note: str = "") -> str:
        run = ws.run
        frame = max(d.frames_done - 1, 0) if frame is None else frame
        head = (
            f"**{d.config.label}** · prompt “{d.config.prompt}” · seed {d.config.seed} · "
            f"{d.frames_done}/{d.config.frames} frames"
        )
        if run is not None and run.paused:
            head += " · **paused**: Run continues this run"
        lines = [head, d.notice, d.status]
        if ws.run_saved:
            lines.append(f"saved as session `{ws.run_saved[0]}`")
        elif d.frames_done and run is not None and not run.finished:
            lines.append("not saved yet: a run is saved when it finishes, on Stop, or with Save (Sessions tab)")
        if d.frames_done:
            s = ws.scrub["run"]
            lines.append(
                f"showing frame {frame} as it was after its chunk's eviction · "
                + ("following the newest frame" if s.follow else "scrubbed (tick *Follow live* to follow)")
            )
            if note:
                lines.append(f"*{SIGNALS[signal].label}: {note}*")
            ms = d.frame_ms[: d.frames_done]
            lines.append(f"per-frame time: median {np.median(ms):.0f} ms, newest {ms[-1]:.0f} ms")
        return "  \n".join(x for x in lines if x)

    @staticmethod
    def shown_frame(ws: Workspace, what: str = "run") -> int:
        """The frame the tab's views show: the newest while following live, else the scrubbed one."""
        with ws.lock:
            target = ws.run if what == "run" else ws.compare
            n = 0 if target is None else target.frames_done
            s = ws.scrub[what]
            return max(n - 1, 0) if s.follow else int(np.clip(s.frame, 0, max(n - 1, 0)))

    def pick_heatmap(self, ws: Workspace, frame: int, x: int, y: int) -> int | None:
        """Heatmap pixel -> token id of the shown frame (None outside the frame)."""
        with ws.lock:
            if ws.run is None or ws.run.data.frames_done == 0:
                return None
            h = ws.run.data.history
            s, (H, W) = views.scale(ws.run.data), ws.run.data.frames.shape[1:3]
            ch, cw = s * H // h.grid, s * W // h.cols  # px per token cell
            if not (0 <= x < cw * h.cols and 0 <= y < ch * h.grid):
                return None
            f = int(np.clip(frame, 0, ws.run.data.frames_done - 1))
            ws.token = h.token_id(f, int(y) // ch, int(x) // cw)
            return ws.token

    def pick_cache_map(self, ws: Workspace, x: int, y: int) -> tuple[int, int] | None:
        """Cache-map pixel -> (token id, frame) of a generated frame token (None elsewhere)."""
        with ws.lock:
            if ws.run is None:
                return None
            h = ws.run.data.history
            hit = views.CacheMapGeometry.for_history(h).hit(x, y)
            if hit is None or hit[1] < 0 or hit[1] >= ws.run.data.frames_done:
                return None
            _, f, t = hit
            ws.token = h.token_id(f, t // h.cols, t % h.cols)
            return ws.token, f

    def drill_down(self, ws: Workspace, signal: str) -> tuple[object, str]:
        """The picked token's signal over time per layer, when each layer evicted it, the scrubbed time."""
        with ws.lock:
            if ws.run is None or ws.token is None:
                return figures.token_figure(
                    _empty_history(), "attention", 0
                ), "Click a token on the heatmap or the cache map to follow it over time."
            h = ws.run.data.history
            tid = ws.token
            f, y, x = h.token_pos(tid)
            now = h.chunk_of(self.shown_frame(ws))
            ev = [
                f"layer {layer}: evicted at chunk {int(c)}" if c >= 0 else f"layer {layer}: still cached"
                for layer, c in enumerate(h.evicted_at[:, tid])
            ]
            held = [layer for layer, c in enumerate(h.evicted_at[:, tid]) if c < 0 or c > now]
            at = (
                f"at the scrubbed time (chunk {now}): "
                + (f"cached in layers {', '.join(map(str, held))}" if held else "evicted from every layer")
                if h.chunk_of(f) <= now
                else f"not generated yet at the scrubbed time (chunk {now})"
            )
            info = f"**token {tid}** = frame {f}, row {y}, column {x}  \n" + " · ".join(ev) + "  \n" + at
            return figures.token_figure(h, signal, tid, now), info

    # ------------------------------------------------------------------ export


def _auto_name(config: RunConfig) -> str:
    return f"{config.policy}-{config.budget or 'full'}-seed{config.seed}".replace("%", "pct")


def _empty_history():
    from .history import RunHistory

    return RunHistory(1, 0, 64, 8, 1, 1)
