"""Images the explorer shows, built from RunData: the frame, the salience heatmap with its colour bar, the
cache map (every generated token per layer: cached / evicted / anchor) and the comparison grid."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import render
from .history import RunHistory
from .run import RunData
from .signals import SIGNALS

DISPLAY = 256  # small frames are shown upscaled to about this many pixels (64 px frames at 4x)


def scale(data: RunData) -> int:
    """Integer display upscale of a run's frames: 4 for the 64 px world, 1 for frames of DISPLAY px or more."""
    return max(1, DISPLAY // max(data.frames.shape[1:3]))


def _blank(data: RunData) -> np.ndarray:
    s = scale(data)
    return np.full((data.frames.shape[1] * s, data.frames.shape[2] * s, 3), 245, np.uint8)


UI_PAD = 28  # px left free above colour-bar labels: the image buttons sit there
STATUS_RGB = np.array(
    [
        [235, 235, 235],  # 0 not generated yet
        [46, 160, 67],  # 1 cached
        [214, 39, 40],  # 2 evicted
        [31, 119, 180],
    ],  # 3 prompt anchor
    np.uint8,
)


def frame_view(data: RunData, frame: int, preview: bool = False) -> np.ndarray:
    """The committed frame (or the newest denoise preview), upscaled and labelled."""
    s = scale(data)
    if preview and data.preview is not None:
        return render.label(render.upscale(data.preview, s), "denoise preview (x0 estimate)", bottom=True)
    if data.frames_done == 0:
        return render.label(_blank(data), "no frame yet")
    frame = int(np.clip(frame, 0, data.frames_done - 1))
    return render.label(render.upscale(data.frames[frame], s), f"{data.config.label} | frame {frame}", bottom=True)


def heatmap_values(data: RunData, signal: str, layer: int | None, frame: int) -> np.ndarray:
    """(rows, cols) values of the frame's tokens at the frame's own time: when its chunk was committed and evicted."""
    return data.history.frame_values(signal, frame, layer, chunk=data.history.chunk_of(frame))


def heatmap_view(
    data: RunData,
    signal: str,
    layer: int | None,
    frame: int,
    cmap: str = "inferno",
    alpha: float = 0.6,
    gamma: float = 1.0,
    mark: tuple[int, int] | None = None,
    note: str = "",
) -> np.ndarray:
    """Frame with the signal's per-token map at the frame's own time, on the signal's fixed scale, token grid,
    optional marked token, colour bar; `note` says why a map without values has none."""
    sig = SIGNALS[signal]
    rows, cols = data.history.grid, data.history.cols
    if data.frames_done == 0:
        img = _blank(data)
        vals = np.full((rows, cols), np.nan)
    else:
        frame = int(np.clip(frame, 0, data.frames_done - 1))
        vals = heatmap_values(data, signal, layer, frame)
        s = scale(data)
        img = render.overlay(data.frames[frame], vals, sig.vmin, sig.vmax, s, alpha=alpha, cmap=cmap, gamma=gamma)
    img = render.token_grid_lines(img, rows, cols)
    if mark is not None:
        img = render.mark_token(img, rows, *mark, cols=cols)
    where = "mean of layers" if layer is None else f"layer {layer}"
    img = render.label(img, f"{sig.label} | {where} | frame {frame}", bottom=True)
    if data.frames_done and not np.isfinite(vals).any():
        img = render.label(img, note or "no values for this frame", bottom=True, line=1)
    bar = render.colourbar(img.shape[0], sig.vmin, sig.vmax, sig.unit, cmap, width=90, gamma=gamma, pad_top=UI_PAD)
    return render.hstack_bar(img, bar)


@dataclass(frozen=True)
class CacheMapGeometry:
    """Pixel layout of the cache map: one block per layer, a prompt row on top, then one row per frame. A frame
    of many tokens (Wan: 1560) shows `per_cell` consecutive tokens per pixel column, by their majority status."""

    n_layer: int
    n_frames: int
    tokens: int  # tokens per frame
    cell_w: int = 2
    row_h: int = 4
    gap: int = 10
    top: int = 22  # legend strip
    per_cell: int = 1  # tokens per cell

    MAX_BLOCK = 256  # px per layer block at most

    @classmethod
    def for_history(cls, h: RunHistory, max_height: int = 420) -> CacheMapGeometry:
        row_h = int(np.clip(max_height // max(h.n_frames + 1, 1), 1, 10))
        cell_w = 2 if h.n_layer > 2 else 4
        per_cell = 1
        if h.tokens_per_frame * cell_w > cls.MAX_BLOCK:
            cell_w, per_cell = 1, -(-h.tokens_per_frame // cls.MAX_BLOCK)
        return cls(h.n_layer, h.n_frames, h.tokens_per_frame, cell_w, row_h, per_cell=per_cell)

    @property
    def cells(self) -> int:
        return -(-self.tokens // self.per_cell)

    @property
    def block_w(self) -> int:
        return self.cells * self.cell_w

    @property
    def size(self) -> tuple[int, int]:
        return self.top + (self.n_frames + 1) * self.row_h + 4, self.n_layer * (self.block_w + self.gap)

    def hit(self, x: int, y: int) -> tuple[int, int, int] | None:
        """(layer, frame, token index within the frame) under a pixel; frame -1 = prompt row; None = no token."""
        layer, bx = divmod(int(x), self.block_w + self.gap)
        row = (int(y) - self.top) // self.row_h
        if layer >= self.n_layer or bx >= self.block_w or row < 0 or row > self.n_frames or y < self.top:
            return None
        return layer, row - 1, min((bx // self.cell_w) * self.per_cell, self.tokens - 1)

    def binned(self, status: np.ndarray) -> np.ndarray:
        """(rows, tokens) int8 statuses -> (rows, cells): the majority status of each cell's tokens."""
        if self.per_cell == 1:
            return status
        rows, T = status.shape
        pad = np.full((rows, self.cells * self.per_cell - T), -1, np.int8)
        groups = np.concatenate([status, pad], 1).reshape(rows, self.cells, self.per_cell)
        counts = np.stack([(groups == s).sum(-1) for s in range(len(STATUS_RGB))], -1)  # (rows, cells, 4)
        return counts.argmax(-1).astype(np.int8)


def cache_map(
    h: RunHistory, chunk: int | None = None, frame: int | None = None, token: int | None = None
) -> np.ndarray:
    """Every token of every generated frame per layer, coloured by status at the end of `chunk`; the scrubbed
    frame's row between cyan lines; the picked token (id) boxed in every layer."""
    geo = CacheMapGeometry.for_history(h)
    H, W = geo.size
    img = np.full((H, W, 3), 255, np.uint8)
    status = h.status(chunk)  # (L, F, T)
    prompt = h.prompt_status(chunk)  # (L, P)
    for layer in range(h.n_layer):
        block = np.zeros((h.n_frames + 1, geo.tokens), np.int8)
        block[0, : min(h.n_prompt, geo.tokens)] = prompt[layer, : geo.tokens]
        block[1:] = status[layer]
        rgb = STATUS_RGB[geo.binned(block)]  # (F+1, cells, 3)
        rgb = np.repeat(np.repeat(rgb, geo.row_h, 0), geo.cell_w, 1)
        x0 = layer * (geo.block_w + geo.gap)
        img[geo.top : geo.top + rgb.shape[0], x0 : x0 + geo.block_w] = rgb
        _text(img, f"L{layer}", x0 + 2, 14)
    if frame is not None and 0 <= frame < h.n_frames:  # scrubber position: cyan lines around the row
        y = geo.top + (frame + 1) * geo.row_h
        img[max(y - 1, 0)] = (23, 190, 207)
        img[min(y + geo.row_h, H - 1)] = (23, 190, 207)
    if token is not None and h.n_prompt <= token < h.n_tokens:
        f, r = divmod(token - h.n_prompt, h.tokens_per_frame)
        y0 = geo.top + (f + 1) * geo.row_h
        for layer in range(h.n_layer):
            x0 = layer * (geo.block_w + geo.gap) + (r // geo.per_cell) * geo.cell_w
            ya, yb = max(y0 - 2, 0), min(y0 + geo.row_h + 2, H)
            xa, xb = max(x0 - 2, 0), min(x0 + geo.cell_w + 2, W)
            img[ya:yb, xa:xb][[0, -1], :] = (0, 0, 0)
            img[ya:yb, xa:xb][:, [0, -1]] = (0, 0, 0)
    return img


def _text(img: np.ndarray, text: str, x: int, y: int) -> None:
    import cv2

    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def cache_map_legend(rows: int, cols: int, n_prompt: int) -> str:
    """The cache map's legend for a model's token grid (rows x cols per frame) and prompt anchors."""
    top = "top row = prompt anchors, then " if n_prompt else ""
    return CACHE_MAP_LEGEND.format(top=top, grid=f"{rows}x{cols}")


CACHE_MAP_LEGEND = (
    "**Cache map**: one block per layer (L0, L1, ...); {top}one row per "
    "frame, one column per token (row-major over the {grid} token grid; large grids bin several tokens per "
    "cell). "
    "<span style='color:#2ea043'>■ cached</span> · <span style='color:#d62728'>■ evicted</span> · "
    "<span style='color:#1f77b4'>■ prompt anchor</span> · <span style='color:#aaa'>■ not generated"
    "</span> · status at the scrubbed time; cyan = the scrubbed frame; black box = the picked token. "
    "Hover for the token, click it to drill down."
)


def compare_grid(datas: list[RunData], frame: int, cols: int | None = None) -> np.ndarray:
    """Side-by-side panels of several runs at one frame, labelled with configuration and frame."""
    panels = [frame_view(d, frame) for d in datas]
    return render.tile(panels, cols)


def wipe_pair(a: RunData, b: RunData, frame: int) -> tuple[np.ndarray, np.ndarray]:
    return frame_view(a, frame), frame_view(b, frame)


def diff_view(a: RunData, b: RunData, frame: int, vmax: float = 96.0) -> np.ndarray:
    """|A - B| (mean over RGB) of the same frame of two runs, on a fixed scale, with a colour bar."""
    n = min(a.frames_done, b.frames_done)
    if n == 0:
        return _blank(a)
    frame = int(np.clip(frame, 0, n - 1))
    s = scale(a)
    d = render.diff_map(render.upscale(a.frames[frame], s), render.upscale(b.frames[frame], s), vmax)
    d = render.label(d, f"|{a.config.label} - {b.config.label}| | frame {frame}", bottom=True)
    return render.hstack_bar(
        d, render.colourbar(d.shape[0], 0, vmax, "|A-B| (0-255)", "magma", width=90, pad_top=UI_PAD)
    )


def no_values_note(data: RunData, signal: str, frame: int) -> str:
    """Why the heatmap of `frame` under `signal` has no values at the frame's own time ('' when it has)."""
    h = data.history
    if np.isfinite(h.frame_values(signal, frame, chunk=h.chunk_of(frame))).any():
        return ""
    if signal == "teacher":
        return (
            "not computed for this frame: press Teacher salience (a window of frames around the scrubbed one)"
            if "teacher" in h.static
            else "press Teacher salience to compute it"
        )
    if signal == "predicted":
        return "no salience head is loaded, so nothing predicts salience"
    if signal == "score":
        if not any(s.values.get("score") is not None for s in h.snapshots):
            return (
                "the full cache never evicts, so nothing is scored"
                if data.config.policy == "full"
                else "no scores in this run: the policy keeps tokens by position (or nothing was evicted yet)"
            )
        return (
            "not scored at this frame's time: no eviction followed its chunk (the cache was under budget, "
            "or the policy evicts every few chunks: see `period`)"
        )
    return "no values recorded for this frame"


def hover_data(data: RunData, signal: str, frame: int) -> dict:
    """What the hover tooltips of the heatmap and the cache map say, as plain JSON: for each token of `frame`
    (row-major) its value per layer and the mean at the frame's time, and per layer the chunk that evicted
    it (-1 = still cached); the pixel layout of both images."""
    h = data.history
    sig = SIGNALS[signal]
    T, L = h.tokens_per_frame, h.n_layer
    per_layer = np.stack(
        [h.frame_values(signal, frame, layer, chunk=h.chunk_of(frame)).ravel() for layer in range(L)]
    )  # (L, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tokens stay NaN
        mean = np.nanmean(per_layer, 0)  # (T,)
    vals = np.concatenate([mean[None], per_layer]).T  # (T, L + 1)
    base = h.n_prompt + frame * T
    geo = CacheMapGeometry.for_history(h)
    return {
        "frame": int(frame),
        "chunk": h.chunk_of(frame),
        "now": max(h.chunks_done - 1, 0),
        "grid": h.cols,  # tokens per row
        "rows": h.grid,
        "cell": scale(data) * data.frames.shape[2] // h.cols,  # px per token cell, across
        "cell_h": scale(data) * data.frames.shape[1] // h.grid,  # and down
        "signal": sig.label,
        "unit": sig.unit,
        "values": [[None if not np.isfinite(v) else round(float(v), 3) for v in row] for row in vals],
        "evicted": h.evicted_at[:, base : base + T].T.tolist(),  # (T, L)
        "map": {
            "top": geo.top,
            "row_h": geo.row_h,
            "cell_w": geo.cell_w,
            "gap": geo.gap,
            "block_w": geo.block_w,
            "n_layer": L,
            "n_frames": h.n_frames,
            "tokens": T,
            "per_cell": geo.per_cell,
            "grid": h.cols,
            "frames_done": data.frames_done,
            "chunk_frames": h.chunk_frames,
            "status_rgb": STATUS_RGB.tolist(),
        },  # not generated, cached, evicted, anchor
    }


def parse_layer(layer: str | int | None, n_layer: int) -> int | None:
    """'mean' / None -> None (mean over layers); 'layer 2' / '2' / 2 -> 2."""
    if layer in (None, "", "mean", "mean of layers"):
        return None
    s = str(layer).replace("layer", "").strip()
    if not s.isdigit() or not 0 <= int(s) < n_layer:
        raise ValueError(f"layer must be 'mean' or 0..{n_layer - 1}, got {layer!r}")
    return int(s)
