"""Pure image functions for the explorer: colour maps on a fixed scale, overlays, bars, labels, tiles.

Every image is numpy uint8 RGB (H, W, 3); every function returns a new array and never edits its input.
Token maps are (g, g) float arrays that may hold NaN, meaning "token not in the cache / no value":
`colourise` draws NaN cells mid-grey (128, 128, 128) with a thin darker diagonal hatch (80, 80, 80), and
`overlay` shows the frame darkened (x0.35) there instead of a colour.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

CMAPS = {
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "turbo": cv2.COLORMAP_TURBO,
}
NAN_GREY = 128  # NaN cells in `colourise`: this grey ...
NAN_HATCH = 80  # ... crossed by diagonal lines of this grey, every HATCH_PERIOD px
HATCH_PERIOD = 6
NAN_DARKEN = 0.35  # NaN cells in `overlay`: the frame times this
FONT = cv2.FONT_HERSHEY_SIMPLEX
BAR_X0, BAR_W = 4, 14  # colour bar strip: columns BAR_X0 .. BAR_X0 + BAR_W - 1 of `colourbar`
BAR_BOTTOM_PAD = 8  # rows below the strip (room for the vmin tick label)


# ----------------------------------------------------------------------------------------------- colour


@cache
def _lut(cmap: str) -> np.ndarray:
    """RGB lookup table (256, 3) uint8 of an OpenCV colour map (applyColorMap gives BGR)."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose from {sorted(CMAPS)}")
    ramp = np.arange(256, dtype=np.uint8)[:, None]  # (256, 1)
    lut = cv2.applyColorMap(ramp, CMAPS[cmap])[:, 0, ::-1]  # (256, 3) RGB
    lut = np.ascontiguousarray(lut)
    lut.flags.writeable = False
    return lut


def _unit(values: np.ndarray, vmin: float, vmax: float, gamma: float = 1.0) -> np.ndarray:
    """clip((v - vmin) / (vmax - vmin), 0, 1) ** gamma on a fixed scale; NaN stays NaN. Same shape."""
    span = float(vmax) - float(vmin)
    u = (np.asarray(values, dtype=np.float64) - float(vmin)) / (span if span > 0 else 1e-12)
    return np.clip(u, 0.0, 1.0) ** float(gamma)


def _apply_cmap(u: np.ndarray, cmap: str) -> np.ndarray:
    """Unit values (...) in [0, 1] (NaN allowed, drawn as index 0) -> RGB (..., 3) uint8."""
    idx = np.rint(np.nan_to_num(u, nan=0.0) * 255).astype(np.intp)  # (...)
    return _lut(cmap)[idx]


def _resize_nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of (h0, w0[, C]) to (h, w[, C]) so that token cells stay crisp."""
    if img.shape[:2] == (h, w):
        return img.copy()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)


def _nan_cells(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean (h, w) mask of the pixels covered by NaN cells of values (g, g)."""
    mask = np.isnan(np.asarray(values, dtype=np.float64)).astype(np.uint8)  # (g, g)
    return _resize_nearest(mask, h, w).astype(bool)


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour integer upscale of (H, W, 3) or (T, H, W, 3) -> (.., H*scale, W*scale, 3)."""
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    ax = img.ndim - 3  # the H axis: 0 for one image, 1 for a video
    if ax not in (0, 1):
        raise ValueError(f"expected (H, W, 3) or (T, H, W, 3), got {img.shape}")
    if scale == 1:
        return img.copy()
    return img.repeat(scale, axis=ax).repeat(scale, axis=ax + 1)


def colourise(
    values: np.ndarray, vmin: float, vmax: float, size: int, cmap: str = "inferno", gamma: float = 1.0
) -> np.ndarray:
    """Token map (g, g) float -> (size, size, 3) uint8 on the fixed scale [vmin, vmax], so one value
    always gets one colour whatever the other values. NaN cells are mid-grey with a diagonal hatch."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a (g, g) token map, got {values.shape}")
    cells = _apply_cmap(_unit(values, vmin, vmax, gamma), cmap)  # (g, g, 3)
    out = _resize_nearest(cells, size, size)  # (size, size, 3)
    nan = _nan_cells(values, size, size)  # (size, size)
    if nan.any():
        yy, xx = np.mgrid[:size, :size]
        hatch = (xx + yy) % HATCH_PERIOD == 0  # (size, size) diagonal lines
        out[nan] = NAN_GREY
        out[nan & hatch] = NAN_HATCH
    return out


def overlay(
    frame: np.ndarray,
    values: np.ndarray,
    vmin: float,
    vmax: float,
    scale: int = 4,
    alpha: float = 0.5,
    cmap: str = "inferno",
    gamma: float = 1.0,
) -> np.ndarray:
    """Frame (S, S, 3) upscaled by `scale`, blended with the colourised token map (g, g):
    (1 - alpha) * frame + alpha * colour. NaN cells show the frame darkened instead. -> (S*scale, S*scale, 3)"""
    big = upscale(frame, scale)  # (H, W, 3)
    h, w = big.shape[:2]
    values = np.asarray(values, dtype=np.float64)
    colour = _resize_nearest(_apply_cmap(_unit(values, vmin, vmax, gamma), cmap), h, w)  # (H, W, 3)
    out = (1.0 - alpha) * big.astype(np.float32) + alpha * colour.astype(np.float32)
    nan = _nan_cells(values, h, w)  # (H, W)
    out[nan] = big[nan].astype(np.float32) * NAN_DARKEN
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def diff_map(a: np.ndarray, b: np.ndarray, vmax: float = 128.0, cmap: str = "magma") -> np.ndarray:
    """|a - b| averaged over RGB, divided by vmax, colour-mapped: (H, W, 3) x2 -> (H, W, 3) uint8."""
    if a.shape != b.shape:
        raise ValueError(f"diff_map needs equal shapes, got {a.shape} and {b.shape}")
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=-1)  # (H, W)
    return _apply_cmap(_unit(d, 0.0, vmax), cmap)


# ----------------------------------------------------------------------------------------- annotation


def token_grid_lines(
    img: np.ndarray, rows: int, cols: int | None = None, colour=(255, 255, 255), alpha: float = 0.25
) -> np.ndarray:
    """Faint 1-px lines between token cells (every H/rows rows and W/cols columns; cols None = rows), blended
    with alpha."""
    cols = cols or rows
    h, w = img.shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    for i in range(1, rows):
        mask[int(round(i * h / rows)), :] = True
    for i in range(1, cols):
        mask[:, int(round(i * w / cols))] = True
    out = img.copy()
    blend = (1.0 - alpha) * img[mask].astype(np.float32) + alpha * np.asarray(colour, np.float32)
    out[mask] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


def _cell_box(shape, rows: int, cols: int, y: int, x: int) -> tuple[int, int, int, int]:
    """Pixel bounds (y0, y1, x0, x1), end-exclusive, of token cell (y, x) in an image of `shape`."""
    h, w = shape[:2]
    if not (0 <= y < rows and 0 <= x < cols):
        raise ValueError(f"token ({y}, {x}) outside a {rows}x{cols} grid")
    return (
        int(round(y * h / rows)),
        int(round((y + 1) * h / rows)),
        int(round(x * w / cols)),
        int(round((x + 1) * w / cols)),
    )


def mark_token(img: np.ndarray, rows: int, y: int, x: int, colour=(0, 255, 255), cols: int | None = None) -> np.ndarray:
    """2-px rectangle drawn just inside the border of token cell (y, x) (row, column) of a rows x cols map."""
    y0, y1, x0, x1 = _cell_box(img.shape, rows, cols or rows, y, x)
    out = img.copy()
    c = np.asarray(colour, dtype=np.uint8)
    out[y0 : min(y0 + 2, y1), x0:x1] = c
    out[max(y1 - 2, y0) : y1, x0:x1] = c
    out[y0:y1, x0 : min(x0 + 2, x1)] = c
    out[y0:y1, max(x1 - 2, x0) : x1] = c
    return out


def _fit_scale(text: str, max_w: int, scale: float, min_scale: float = 0.3) -> float:
    """Largest font scale <= `scale` (down to min_scale) at which `text` is at most max_w px wide."""
    while scale > min_scale and cv2.getTextSize(text, FONT, scale, 1)[0][0] > max_w:
        scale -= 0.025
    return max(scale, min_scale)


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float, colour) -> None:
    """Draw text in place with its baseline-left corner at (x, y); OpenCV clips at the image edges."""
    cv2.putText(img, text, (int(x), int(y)), FONT, scale, tuple(int(c) for c in colour), 1, cv2.LINE_AA)


def _wrap(text: str, max_w: int, scale: float, max_lines: int = 3) -> list[str]:
    """Split text at spaces into at most max_lines lines of at most max_w px (the last one may be clipped)."""
    lines: list[str] = []
    for word in text.split():
        if lines and cv2.getTextSize(f"{lines[-1]} {word}", FONT, scale, 1)[0][0] <= max_w:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) < max_lines:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}"
    return lines or [""]


def label(img: np.ndarray, text: str, scale: float = 0.45, bottom: bool = False, line: int = 0) -> np.ndarray:
    """Copy of img with white text on a black backing box, top-left (or bottom-left, clear of the UI's own
    component label that sits top-left), `line` boxes in from that edge; text longer than the image is clipped."""
    out = img.copy()
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    pad = 3
    h = min(th + base + 2 * pad, out.shape[0])
    y0 = int(np.clip(out.shape[0] - h * (line + 1) if bottom else h * line, 0, out.shape[0] - h))
    out[y0 : y0 + h, : min(tw + 2 * pad, out.shape[1])] = 0
    _text(out, text, pad, y0 + pad + th, scale, (255, 255, 255))
    return out


def _fmt(v: float) -> str:
    """Tick label with 3 significant digits."""
    return f"{v:.3g}"


def colourbar(
    height: int,
    vmin: float,
    vmax: float,
    label: str,
    cmap: str = "inferno",
    width: int = 70,
    gamma: float = 1.0,
    pad_top: int = 0,
) -> np.ndarray:
    """Vertical colour bar (height, width, 3): white background, `label` on top (shrunk, then wrapped at
    spaces onto up to 3 lines to fit the width; `pad_top` px lower, clear of the UI's image buttons), a strip with
    vmax at the
    top row and vmin at the bottom row (linear in value, colour with gamma), ticks at vmin, mid and vmax."""
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    black = (0, 0, 0)
    lscale = _fit_scale(label, width - 4, 0.4)
    lines = _wrap(label, width - 4, lscale)
    (_, lh), lbase = cv2.getTextSize(label or "0", FONT, lscale, 1)
    for i, line in enumerate(lines):
        _text(out, line, 2, pad_top + 2 + lh + i * (lh + 4), lscale, black)
    top = pad_top + 2 + len(lines) * (lh + 4) - 4 + lbase + 6  # first row of the strip
    bottom = max(height - BAR_BOTTOM_PAD, top + 2)  # one past the last row of the strip
    n = bottom - top
    vals = float(vmax) - (float(vmax) - float(vmin)) * np.arange(n) / max(n - 1, 1)  # (n,) top -> bottom
    strip = _apply_cmap(_unit(vals, vmin, vmax, gamma), cmap)  # (n, 3)
    out[top - 1 : bottom + 1, BAR_X0 - 1 : BAR_X0 + BAR_W + 1] = 160  # 1-px grey frame around the strip
    out[top:bottom, BAR_X0 : BAR_X0 + BAR_W] = strip[:, None, :]
    tx = BAR_X0 + BAR_W + 5
    ticks = [_fmt(v) for v in (vmax, (float(vmin) + float(vmax)) / 2, vmin)]
    tscale = min(_fit_scale(t, width - tx - 1, 0.35) for t in ticks)
    th = cv2.getTextSize("0", FONT, tscale, 1)[0][1]
    for text, row in zip(ticks, (top, top + (n - 1) / 2, bottom - 1)):
        row = int(round(row))
        out[row, BAR_X0 + BAR_W + 1 : BAR_X0 + BAR_W + 4] = 0  # tick mark
        base = min(max(row + th // 2, th + 1), height - 2)  # baseline: centred on the tick, inside the image
        _text(out, text, tx, base, tscale, black)
    return out


# -------------------------------------------------------------------------------------------- layout


def _rgb(img: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) -> (H, W, 3) uint8."""
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def tile(panels: list[np.ndarray], cols: int | None = None, pad: int = 4, bg: int = 255) -> np.ndarray:
    """Grid of panels, row-major, `cols` per row (default: all in one row), `pad` px of bg between them.
    Panels of different sizes sit top-left in cells of the largest H and W. Panel i is at
    y = (i // cols) * (h + pad), x = (i % cols) * (w + pad). The output is padded with bg to even dims."""
    if not panels:
        raise ValueError("tile needs at least one panel")
    panels = [_rgb(p) for p in panels]
    cols = max(1, min(int(cols or len(panels)), len(panels)))
    rows = -(-len(panels) // cols)
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    H, W = rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad
    out = np.full((H + H % 2, W + W % 2, 3), bg, dtype=np.uint8)
    for i, p in enumerate(panels):
        y, x = (i // cols) * (h + pad), (i % cols) * (w + pad)
        out[y : y + p.shape[0], x : x + p.shape[1]] = p
    return out


def hstack_bar(img: np.ndarray, bar: np.ndarray, pad: int = 4) -> np.ndarray:
    """img (H, W, 3) | pad white columns | bar resized to height H -> (H, W + pad + w_bar, 3)."""
    h = img.shape[0]
    if bar.shape[0] != h:
        bar = cv2.resize(bar, (bar.shape[1], h), interpolation=cv2.INTER_AREA if bar.shape[0] > h else cv2.INTER_LINEAR)
    gap = np.full((h, pad, 3), 255, dtype=np.uint8)
    return np.concatenate([_rgb(img), gap, _rgb(bar)], axis=1)
