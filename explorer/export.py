"""File exports for the explorer: MP4 / GIF / PNG, side-by-side comparison videos, CSV, JSON, ZIP.

Every writer is atomic: it writes a temporary file (".partial-*") in the target directory, sets mode 0o644
and renames it over the target with os.replace, so a reader never sees a half-written file and a failed
write leaves nothing behind. Parent directories are created. Each writer returns the final Path.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

from backend.atomic import PARTIAL, atomic_path
from explorer.render import colourbar, hstack_bar, label, overlay, tile, upscale


def _write_bytes(data: bytes, path) -> Path:
    """Atomically write bytes to path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate uint8 (T, H, W, 3) with T >= 1; returns it as a contiguous array."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad (..., H, W, 3) with edge pixels at the bottom/right to even H and W (h264 yuv420p needs it)."""
    h, w = frames.shape[-3:-1]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    widths = [(0, 0)] * (frames.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
    return np.pad(frames, widths, mode="edge")


# ------------------------------------------------------------------------------------------ images


def write_mp4(frames: np.ndarray, path, fps: int = 12) -> Path:
    """Frames uint8 (T, H, W, 3), already at final size -> browser-playable MP4 (h264, yuv420p, crf 18,
    faststart); odd H or W are padded by one edge pixel."""
    frames = _even(_check_frames(frames))
    with atomic_path(path, ".mp4") as tmp:
        iio.imwrite(
            tmp,
            frames,
            plugin="FFMPEG",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=2,
            ffmpeg_params=["-crf", "18", "-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
    return Path(path)


def write_gif(frames: np.ndarray, path, fps: int = 12) -> Path:
    """Frames uint8 (T, H, W, 3) -> looping GIF, 1000/fps ms per frame (GIF stores 10 ms units; Pillow
    merges identical consecutive frames into one longer frame)."""
    frames = _check_frames(frames)
    with atomic_path(path, ".gif") as tmp:
        iio.imwrite(tmp, frames, plugin="pillow", duration=1000 / fps, loop=0)
    return Path(path)


def _png_bytes(img: np.ndarray) -> bytes:
    """RGB (H, W, 3) or grey (H, W) uint8 -> PNG bytes."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image (H, W[, 3]), got {img.dtype} {img.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_png(img: np.ndarray, path) -> Path:
    """RGB (H, W, 3) or grey (H, W) uint8 -> PNG."""
    return _write_bytes(_png_bytes(img), path)


def cached_png(img: np.ndarray, folder) -> str:
    """A served image as a content-addressed PNG: folder/<sha256 of the PNG>/image.png, written atomically and
    only if absent, so a reader never sees it half-written. Gradio's own numpy path rewrites the same
    hash-named file in place on every use, and a concurrent request for an identical image (two browser
    sessions at the same step, or a repeated preview) can then be served a truncated file."""
    data = _png_bytes(img)
    path = Path(folder) / hashlib.sha256(data).hexdigest() / "image.png"
    if not path.is_file():
        _write_bytes(data, path)
    return str(path)


def comparison_frames(
    videos: list[np.ndarray],
    labels: list[str],
    scale: int = 4,
    overlays: list[np.ndarray | None] | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    signal_label: str = "salience",
    cmap: str = "inferno",
    cols: int | None = None,
    frame_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Side-by-side video: for each frame t, a tile of panels (video i upscaled, with overlay i on a fixed
    [vmin, vmax] scale if given, labelled "<label> | frame t"), plus a colour bar when any overlay is given.
    videos: each (T_i, S, S, 3) uint8; overlays: each None or (T_i, g, g) float with NaN. Frames run over
    the shortest length T, restricted to frame_range = (start, stop) (slice semantics) if given.
    -> (T', H, W, 3) uint8 with even H and W."""
    if len(videos) == 0 or len(labels) != len(videos):
        raise ValueError(f"need one label per video, got {len(videos)} videos and {len(labels)} labels")
    overlays = list(overlays) if overlays is not None else [None] * len(videos)
    if len(overlays) != len(videos):
        raise ValueError(f"need one overlay (or None) per video, got {len(overlays)} for {len(videos)}")
    T = min([len(v) for v in videos] + [len(o) for o in overlays if o is not None])
    ts = range(T)[slice(*frame_range)] if frame_range is not None else range(T)
    if len(ts) == 0:
        raise ValueError(f"no frames in range {frame_range} of {T}")
    bar = None
    out = []
    for t in ts:
        panels = []
        for vid, ov, name in zip(videos, overlays, labels):
            img = upscale(vid[t], scale) if ov is None else overlay(vid[t], ov[t], vmin, vmax, scale, cmap=cmap)
            panels.append(label(img, f"{name} | frame {t}"))
        frame = tile(panels, cols)  # (H, W, 3), even dims
        if any(o is not None for o in overlays):
            if bar is None:
                bar = colourbar(frame.shape[0], vmin, vmax, signal_label, cmap)
            frame = hstack_bar(frame, bar)
        out.append(frame)
    return _even(np.stack(out))


# ------------------------------------------------------------------------------------------- tables


def _plain(v):
    """numpy scalars/arrays, Paths, tuples, sets, dataclasses -> plain JSON types; NaN and inf -> None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(dataclasses.asdict(v))
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return [_plain(x) for x in sorted(v, key=repr)]
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def write_json(obj, path) -> Path:
    """obj -> JSON (indent 2), numpy arrays/scalars converted, NaN (and +-inf) written as null."""
    text = json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n"
    return _write_bytes(text.encode("utf-8"), path)


def _cell(v) -> str:
    """One CSV cell: floats with 6 significant digits, None and NaN empty, arrays as JSON lists."""
    v = _plain(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def write_csv(rows: list[dict], path) -> Path:
    """rows -> CSV; header = union of the keys in first-seen order; a missing key is an empty cell."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(row.get(k)) for k in header])
    return _write_bytes(buf.getvalue().encode("utf-8"), path)


def zip_folder(folder, path) -> Path:
    """Zip every file under folder (deflated, paths relative to folder, sorted); the archive itself and
    unfinished temporary files are left out."""
    folder, path = Path(folder), Path(path)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(PARTIAL) and p.resolve() != path.resolve()
    )
    with atomic_path(path, ".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, p.relative_to(folder).as_posix())
    return path
