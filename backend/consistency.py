"""Analytic world-consistency evaluator: works on frames alone, so it scores generated videos too.

- ``detect``: sprites by colour (connected components of pixels near a sprite colour) and shape (bottom
  mass for the apex-up triangle, bounding-box fill for square vs circle); components cut by the wall or
  the frame edge are marked partial (colour only).
- scores: prompt adherence (prompted objects found, among those not plausibly behind the wall), identity
  persistence after occlusion (a sprite that vanished for >= 3 frames comes back with the colour it had
  in the first frames), background/landmark consistency on revisit (frames one pan period apart show the
  same ground), drift (first vs last quarter), frame contrast (collapse check), and extra objects (sprite-
  coloured components beyond the prompted count, per frame: adherence alone cannot see a frame that is a
  soup of colours, which finds every prompted object).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .prompt import SHAPES, SceneSpec, parse
from .world import LANDMARK_RGB, SPRITE_RGB, WALL_RGB, WorldConfig

COLOUR_TOL = 80  # L-inf distance (0-255) from a sprite colour that still counts as that colour
MIN_AREA = 14  # px: smaller components are noise
MISSING_RUN = 3  # frames an identity must be missing to count as an occlusion
MAX_HIDDEN = 30  # frames a sprite may stay behind the wall (the world hides them 8-24)
# bumped whenever a score's definition changes, so benchmarks never mix scores of two definitions
# (2: never-seen objects count as hidden only in the first MAX_HIDDEN frames; extra_objects)
EVALUATOR_VERSION = 2


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str | None  # None when the component is partial (cut by the wall or the frame edge)
    x: float
    y: float
    area: int


def colour_masks(frame: np.ndarray, tol: int = COLOUR_TOL) -> dict[str, np.ndarray]:
    f = frame.astype(np.int16)
    return {c: (np.abs(f - np.array(rgb, np.int16)).max(-1) < tol) for c, rgb in SPRITE_RGB.items()}


def wall_columns(frame: np.ndarray) -> np.ndarray:
    """Boolean (W,) of columns that are the grey wall over at least 70% of their height."""
    grey = np.abs(frame.astype(np.int16) - np.array(WALL_RGB, np.int16)).max(-1) < 24
    return grey.mean(0) > 0.7


def classify(comp: np.ndarray) -> str:
    """Shape of a full (uncut) component mask."""
    ys, xs = np.nonzero(comp)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fill = len(ys) / ((y1 - y0) * (x1 - x0))
    bottom = (ys >= (y0 + y1) / 2).mean()
    if bottom > 0.62 and fill < 0.75:
        return "triangle"
    return "square" if fill > 0.88 else "circle"


def detect(frame: np.ndarray, wall: np.ndarray | None = None) -> list[Detection]:
    """Sprites in one uint8 (S, S, 3) frame."""
    S = frame.shape[0]
    wall = wall_columns(frame) if wall is None else wall
    near_wall = np.convolve(wall.astype(float), np.ones(3), "same") > 0
    out = []
    for colour, mask in colour_masks(frame).items():
        n, lab, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if area < MIN_AREA:
                continue
            cut = (
                x == 0 or y == 0 or x + w == S or y + h == S or near_wall[max(x - 1, 0)] or near_wall[min(x + w, S - 1)]
            )
            shape = None if cut else classify(lab[y : y + h, x : x + w] == i)
            out.append(Detection(colour, shape, float(cents[i][0]), float(cents[i][1]), int(area)))
    return out


def mode(values: list):
    """The most frequent value, ties broken by first appearance (deterministic: never by set order, which
    changes with Python's hash seed from one process to the next); None for an empty list."""
    if not values:
        return None
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=counts.get)  # dicts keep insertion order; max keeps the first


def first_identities(dets: list[list[Detection]], spec: SceneSpec, n: int = 4) -> list[tuple[str | None, str]]:
    """Resolve open colours from the first n frames: the most frequent colour seen with each shape."""
    out = []
    for colour, shape in spec.objects:
        if colour is None:
            seen = [d.colour for fr in dets[:n] for d in fr if d.shape == shape]
            colour = mode(seen)
        out.append((colour, shape))
    return out


def whole_match(d: Detection, colour: str | None, shape: str, fixed: set[str]) -> bool:
    """Whether d is a whole (uncut) sprite of a prompted object: its shape, and its colour, or, when the prompt
    leaves the colour open, any colour the prompt does not name (`fixed`)."""
    return d.shape == shape and (d.colour == colour if colour else d.colour not in fixed)


def prompt_adherence(dets, spec: SceneSpec, walls, idents) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: (found, expected) counts of prompted objects (`object_adherence` summed over objects)."""
    found, expected, _ = object_adherence(dets, spec, walls, idents)
    return found.sum(1), expected.sum(1)


def object_adherence(dets, spec: SceneSpec, walls, idents) -> tuple[np.ndarray, np.ndarray, list]:
    """Per frame and prompted object: found (T, J) and expected (T, J) as 0/1, and the matching detection
    per frame (a list of T dicts j -> Detection). A prompted object is found as a full
    detection of its shape and colour (any colour not fixed by the prompt when it is open) or as a partial
    one of its colour (resolved from the first frames when open). An object missing next to the wall where
    it was last seen, at most MAX_HIDDEN frames ago, is taken as hidden; so is one never seen yet, but only
    in the first MAX_HIDDEN frames (a sprite may start behind the wall; one that never shows up is missing,
    not hidden: before, a prompt with a wall scored full adherence on a video that drew one of its three
    objects)."""
    T, J = len(dets), len(spec.objects)
    found, expected = np.zeros((T, J)), np.zeros((T, J))
    matches: list[dict] = [{} for _ in range(T)]
    fixed = {c for c, _ in spec.objects if c is not None}
    last = {}
    for t in range(T):
        for j, ((colour, shape), (icol, _)) in enumerate(zip(spec.objects, idents)):
            ok = [d for d in dets[t] if whole_match(d, colour, shape, fixed) or (d.shape is None and d.colour == icol)]
            if ok:
                found[t, j] = expected[t, j] = 1
                last[j] = (ok[0].x, t)
                matches[t][j] = ok[0]
            else:
                cols = np.nonzero(walls[t])[0]
                hidden = (
                    spec.wall
                    and len(cols)
                    and (
                        (j not in last and t <= MAX_HIDDEN)
                        or (
                            j in last
                            and cols.min() - 12 <= last[j][0] <= cols.max() + 12
                            and t - last[j][1] <= MAX_HIDDEN
                        )
                    )
                )
                expected[t, j] = 0 if hidden else 1
    return found, expected, matches


def identity_persistence(dets, idents) -> tuple[int, int]:
    """(successes, events): an identity's shape missing >= MISSING_RUN frames, then back with its colour."""
    succ = events = 0
    T = len(dets)
    for colour, shape in idents:
        if colour is None:
            continue
        present = np.array(
            [any(d.shape == shape or (d.shape is None and d.colour == colour) for d in fr) for fr in dets]
        )
        t = 0
        while t < T:
            if present[t]:
                t += 1
                continue
            start = t
            while t < T and not present[t]:
                t += 1
            if start == 0 or t - start < MISSING_RUN:
                continue
            if t >= T:  # never came back before the end
                if t - start > 48:
                    events += 1
                break
            # the colour it comes back with: full detections of its shape in the next 40 frames
            back = [d.colour for fr in dets[t : t + 40] for d in fr if d.shape == shape]
            if not back and t + 40 > T:
                continue  # still emerging when the video ends: undecided
            events += 1
            succ += int(mode(back) == colour)
    return succ, events


def revisit_consistency(frames: np.ndarray, period: int, tol: int = 40) -> tuple[float, float]:
    """(background, landmark) agreement between frames one pan period apart (same camera offset)."""
    if len(frames) <= period:
        return float("nan"), float("nan")
    bg, lm = [], []
    lm_rgb = {k: np.array(v, np.int16) for k, v in LANDMARK_RGB.items()}
    for a in range(len(frames) - period):
        fa, fb = frames[a].astype(np.int16), frames[a + period].astype(np.int16)
        sprite = np.zeros(fa.shape[:2], bool)
        for f in (frames[a], frames[a + period]):
            for m in colour_masks(f).values():
                sprite |= cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ok = ~sprite & ~wall_columns(frames[a])[None, :]
        if ok.sum() < 100:
            continue
        bg.append((np.abs(fa - fb).max(-1)[ok] < tol).mean())
        for rgb in lm_rgb.values():
            ma = (np.abs(fa - rgb).max(-1) < 60) & ok
            if ma.sum() >= 6:
                lm.append(((np.abs(fb - rgb).max(-1) < 60) & ma).sum() / ma.sum())
    return (float(np.mean(bg)) if bg else float("nan"), float(np.mean(lm)) if lm else float("nan"))


def contrast(frames: np.ndarray) -> np.ndarray:
    """Per-frame contrast: std of the grey level (0-255)."""
    grey = frames.astype(np.float32).mean(-1)
    return grey.reshape(len(frames), -1).std(1)


def evaluate_video(frames: np.ndarray, prompt: str | SceneSpec, world: WorldConfig = WorldConfig()) -> dict:
    """All world-consistency scores of one video (uint8 (T, S, S, 3)) for its prompt."""
    spec = parse(prompt) if isinstance(prompt, str) else prompt
    walls = [wall_columns(f) for f in frames]
    dets = [detect(f, w) for f, w in zip(frames, walls)]
    idents = first_identities(dets, spec)
    found, expected = prompt_adherence(dets, spec, walls, idents)
    succ, events = identity_persistence(dets, idents)
    bg, lm = revisit_consistency(frames, world.pan_period) if spec.pan else (float("nan"), float("nan"))
    T, q = len(frames), max(len(frames) // 4, 1)
    per_frame = np.where(expected > 0, found / np.maximum(expected, 1), 1.0)
    con = contrast(frames)
    return {
        "adherence": float(found.sum() / max(expected.sum(), 1)),
        "frames_all_found": float((found >= expected).mean()),
        "identity_persistence": float(succ / events) if events else float("nan"),
        "occlusion_events": int(events),
        "background_revisit": bg,
        "landmark_revisit": lm,
        "extra_objects": float(np.mean([max(len(d) - len(spec.objects), 0) for d in dets])),
        "adherence_first_quarter": float(per_frame[:q].mean()),
        "adherence_last_quarter": float(per_frame[T - q :].mean()),
        "drift": float(abs(per_frame[:q].mean() - per_frame[T - q :].mean())),
        "contrast_min": float(con.min()),
        "contrast_max": float(con.max()),
        "per_frame_adherence": per_frame,
    }


LOST_SHARE = 0.5  # an object found in fewer of the frames where it should be visible is lost


def lost_objects(tracks: list[dict]) -> list[dict]:
    """The tracks (`object_tracks`) of objects found in under LOST_SHARE of the frames where they should be
    visible (objects never expected, e.g. behind the wall from the start, are not counted)."""
    return [t for t in tracks if np.isfinite(t["found_share"]) and t["found_share"] < LOST_SHARE]


def object_tracks(frames: np.ndarray, prompt: str | SceneSpec) -> list[dict]:
    """Per prompted object: its label, the share of the frames where it should be visible in which it is
    found, and per frame where it is found its detection (centroid x, y and area, pixels)."""
    spec = parse(prompt) if isinstance(prompt, str) else prompt
    walls = [wall_columns(f) for f in frames]
    dets = [detect(f, w) for f, w in zip(frames, walls)]
    idents = first_identities(dets, spec)
    found, expected, matches = object_adherence(dets, spec, walls, idents)
    out = []
    for j, ((colour, shape), (icol, _)) in enumerate(zip(spec.objects, idents)):
        label = f"{colour or icol or 'open-colour'} {shape}" + (" (colour open)" if colour is None else "")
        exp = expected[:, j].sum()
        out.append(
            {
                "label": label,
                "found_share": float(found[:, j].sum() / exp) if exp else float("nan"),
                "frames": {t: m[j] for t, m in enumerate(matches) if j in m},
            }
        )
    return out


__all__ = [
    "Detection",
    "detect",
    "evaluate_video",
    "object_tracks",
    "lost_objects",
    "contrast",
    "whole_match",
    "SHAPES",
]
