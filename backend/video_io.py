"""Browser-playable MP4 (h264, yuv420p, even dimensions) and GIF writing, atomically."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from .atomic import atomic_path


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of uint8 (T, H, W, 3), padded to even dimensions."""
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    T, H, W, C = frames.shape
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def write_video(frames: np.ndarray, path: str | Path, fps: int = 12, scale: int = 4) -> Path:
    """Write uint8 (T, H, W, 3) frames to .mp4 (libx264, yuv420p) or .gif; the file appears only when
    complete (written to a temporary name, then renamed)."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"output must end in .mp4 or .gif, got {path.name!r}")
    frames = upscale(frames, scale)
    with atomic_path(path, suffix) as tmp:
        if suffix == ".mp4":
            w = imageio.get_writer(
                tmp,
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=2,
                ffmpeg_log_level="error",
                output_params=["-crf", "18"],
            )
            for f in frames:
                w.append_data(f)
            w.close()
        else:
            imageio.mimsave(tmp, list(frames), format="GIF", duration=1000 / fps, loop=0)
    return path
