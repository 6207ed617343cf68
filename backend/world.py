"""Procedural world: deterministic video clips of any length with prompts and per-frame ground truth.

A clip is a background (a colour from the palette, rendered dark, with a pattern) that may be wider than
the view, 1-3 bright sprites moving at constant velocity and bouncing off the view's edges, an optional
grey wall band (in screen space) that hides sprites for 8-24 frames, and an optional camera pan that
slides the view over the background and back on a fixed triangular schedule. Static landmarks (white or
black rings, crosses and bars that no prompt names) sit on the background; during a pan some scroll out
of view and must look the same when the camera returns. Open colours in the prompt are decided by the
seed, so only the first frames say what they are.

Everything is numpy and fully determined by ``(spec, seed)``; frames are rendered on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .prompt import COLOURS, MAX_OBJECTS, PATTERNS, SHAPES, SceneSpec

SPRITE_RGB = {  # bright, saturated: the detector finds sprites by these
    "red": (235, 45, 45),
    "green": (40, 215, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 230),
    "magenta": (220, 50, 220),
}
LANDMARK_RGB = {"white": (245, 245, 245), "black": (12, 12, 12)}
LANDMARK_SHAPES = ("ring", "cross", "bar")
WALL_RGB = (128, 128, 128)
BG_DARK, BG_LIGHT = 0.22, 0.40  # background tones = sprite colour x these


@dataclass(frozen=True)
class WorldConfig:
    size: int = 64  # frames are size x size RGB
    sprite_radius: tuple[float, float] = (5.0, 6.5)
    speed: tuple[float, float] = (0.8, 1.8)  # px / frame
    pan_amplitude: int = 40  # px the camera travels before it returns
    pan_hold: int = 2  # frames held at each end of the pan
    pan_speed: int = 4  # px / frame while panning
    wall_width: tuple[int, int] = (22, 28)
    occlusion_frames: tuple[int, int] = (8, 20)  # how long the wall hides the first sprite
    n_landmarks: tuple[int, int] = (2, 4)

    @property
    def pan_period(self) -> int:
        """Frames from leaving offset 0 to the next time the camera is back at offset 0."""
        return 2 * (self.pan_amplitude // self.pan_speed + self.pan_hold)


def camera_offset(t: np.ndarray | int, cfg: WorldConfig) -> np.ndarray:
    """Camera x offset in px at frame t for a panning clip (triangle wave with holds)."""
    t = np.asarray(t)
    travel = cfg.pan_amplitude // cfg.pan_speed
    phase = t % cfg.pan_period
    half = travel + cfg.pan_hold
    up = np.clip(phase - cfg.pan_hold, 0, travel)  # out: hold, then travel
    down = np.clip(phase - half - cfg.pan_hold, 0, travel)  # back: hold, then travel
    return np.where(phase < half, up, travel - down) * cfg.pan_speed


@dataclass
class Sprite:
    colour: str
    shape: str
    radius: float
    pos: np.ndarray  # [2] (x, y) at frame 0, screen px
    vel: np.ndarray  # [2] px / frame


@dataclass
class Scene:
    """A fully decided scene: every open attribute of the spec resolved by the seed."""

    spec: SceneSpec
    sprites: list[Sprite]
    bg_colour: str
    landmarks: list[tuple[str, str, float, float]]  # (shape, colour, world x, y)
    wall: tuple[int, int] | None  # screen x range [x0, x1)
    cfg: WorldConfig = field(default_factory=WorldConfig)


def sample_spec(rng: np.random.Generator, p_open: float = 0.3, p_wall: float = 0.5, p_pan: float = 0.5) -> SceneSpec:
    """A random prompt of the grammar (objects differ in shape, so identities are unique)."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    colours = rng.choice(len(COLOURS), size=n, replace=False)
    objs = tuple((None if rng.random() < p_open else COLOURS[c], SHAPES[s]) for c, s in zip(colours, shapes))
    bg = None if rng.random() < p_open else COLOURS[int(rng.integers(len(COLOURS)))]
    return SceneSpec(
        objs, bg, PATTERNS[int(rng.integers(len(PATTERNS)))], bool(rng.random() < p_wall), bool(rng.random() < p_pan)
    )


def build_scene(spec: SceneSpec, seed: int, cfg: WorldConfig = WorldConfig()) -> Scene:
    """Resolve a spec into a concrete scene, deterministically from ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    S = cfg.size
    taken = {c for c, _ in spec.objects if c is not None}
    free = [c for c in COLOURS if c not in taken]
    rng.shuffle(free)
    wall = None
    if spec.wall:
        w = int(rng.integers(cfg.wall_width[0], cfg.wall_width[1] + 1))
        x0 = int(rng.integers(S // 2 - w // 2 - 4, S // 2 - w // 2 + 5))
        wall = (x0, x0 + w)
    sprites = []
    for i, (colour, shape) in enumerate(spec.objects):
        if colour is None:
            colour = free.pop()
        r = float(rng.uniform(*cfg.sprite_radius))
        speed = float(rng.uniform(*cfg.speed))
        ang = float(rng.uniform(0, 2 * np.pi))
        vel = np.array([np.cos(ang), np.sin(ang)]) * speed
        pos = rng.uniform(r + 1, S - r - 1, size=2)
        if wall is not None:
            # start beside the wall, never behind it, and cross it in 8-24 frames
            left, right = (r + 1, wall[0] - r), (wall[1] + r, S - r - 1)
            lo, hi = left if rng.random() < (left[1] - left[0]) / (left[1] - left[0] + right[1] - right[0]) else right
            pos[0] = rng.uniform(lo, hi)
            span = wall[1] - wall[0] - 2 * r
            vel[0] = np.sign(vel[0] or 1.0) * np.clip(abs(vel[0]), span / 24, span / 8)
        if wall is not None and i == 0:
            # the first sprite walks into the wall early and is hidden for a chosen number of frames
            hidden = float(rng.uniform(*cfg.occlusion_frames))
            vx = max((wall[1] - wall[0] - 2 * r) / hidden, 0.4)
            side = rng.integers(2)
            pos[0] = wall[0] - r - rng.uniform(1, 6) if side == 0 else wall[1] + r + rng.uniform(1, 6)
            pos[0] = np.clip(pos[0], r + 1, S - r - 1)
            vel = np.array([vx if side == 0 else -vx, rng.uniform(-0.4, 0.4)])
        sprites.append(Sprite(colour, shape, r, pos, vel))
    bg = spec.bg_colour or COLOURS[int(rng.integers(len(COLOURS)))]
    world_w = S + (cfg.pan_amplitude if spec.pan else 0)
    landmarks = []
    for _ in range(int(rng.integers(cfg.n_landmarks[0], cfg.n_landmarks[1] + 1))):
        landmarks.append(
            (
                LANDMARK_SHAPES[int(rng.integers(len(LANDMARK_SHAPES)))],
                ("white", "black")[int(rng.integers(2))],
                float(rng.uniform(6, world_w - 6)),
                float(rng.uniform(6, S - 6)),
            )
        )
    return Scene(spec, sprites, bg, landmarks, wall, cfg)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + 0.5, yy + 0.5


def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of a sprite or landmark shape centred at (cx, cy) with radius r."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # apex up, base 2r wide
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r))
    if shape == "bar":
        return (np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= 1.2 * r)
    raise ValueError(f"unknown shape {shape!r}")


def render_background(scene: Scene) -> np.ndarray:
    """The static world the camera looks at: uint8 [S, world_w, 3] with its landmarks."""
    S, cfg = scene.cfg.size, scene.cfg
    world_w = S + (cfg.pan_amplitude if scene.spec.pan else 0)
    xx, yy = _grid(S, world_w)
    base = np.array(SPRITE_RGB[scene.bg_colour], np.float32)
    dark, light = base * BG_DARK, base * BG_LIGHT
    pat = scene.spec.pattern
    if pat == "plain":
        a = np.zeros_like(xx)
    elif pat == "stripes":
        a = ((xx // 8) % 2).astype(np.float32)
    elif pat == "checker":
        a = (((xx // 8) + (yy // 8)) % 2).astype(np.float32)
    else:  # gradient, periodic over the world so panning shows motion
        a = 0.5 - 0.5 * np.cos(2 * np.pi * xx / 64.0)
    img = dark[None, None] + a[..., None] * (light - dark)[None, None]
    for shape, colour, lx, ly in scene.landmarks:
        m = shape_mask(shape, xx, yy, lx, ly, 4.5)
        img[m] = LANDMARK_RGB[colour]
    return img.astype(np.uint8)


def sprite_positions(scene: Scene, n_frames: int) -> np.ndarray:
    """Sprite centres per frame with elastic bounces off the view edges: [T, n_sprites, 2] (x, y)."""
    S = scene.cfg.size
    out = np.zeros((n_frames, len(scene.sprites), 2), np.float32)
    for i, sp in enumerate(scene.sprites):
        lo, hi = sp.radius, S - sp.radius
        for axis in range(2):
            # unfold the bounce: position on a line, reflected into [lo, hi]
            span = hi - lo
            p = sp.pos[axis] - lo + sp.vel[axis] * np.arange(n_frames)
            p = np.mod(p, 2 * span)
            out[:, i, axis] = lo + np.where(p > span, 2 * span - p, p)
    return out


@dataclass
class Clip:
    """A rendered clip: frames uint8 [T, S, S, 3] plus ground truth."""

    prompt: str
    frames: np.ndarray
    positions: np.ndarray  # [T, n_sprites, 2] (x, y) px
    visibility: np.ndarray  # [T, n_sprites] fraction of the sprite's pixels that are visible
    offsets: np.ndarray  # [T] camera x offset in px
    scene: Scene


def render(scene: Scene, n_frames: int, start: int = 0) -> Clip:
    """Render frames ``start .. start + n_frames`` of a scene (any length: nothing is precomputed)."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    S, cfg = scene.cfg.size, scene.cfg
    bg = render_background(scene)
    xx, yy = _grid(S, S)
    pos = sprite_positions(scene, start + n_frames)[start:]
    t = np.arange(start, start + n_frames)
    offs = camera_offset(t, cfg) if scene.spec.pan else np.zeros(n_frames, np.int64)
    frames = np.empty((n_frames, S, S, 3), np.uint8)
    vis = np.zeros((n_frames, len(scene.sprites)), np.float32)
    wall = np.zeros((S, S), bool)
    if scene.wall is not None:
        wall[:, scene.wall[0] : scene.wall[1]] = True
    for f in range(n_frames):
        img = bg[:, offs[f] : offs[f] + S].copy()
        for i, sp in enumerate(scene.sprites):
            m = shape_mask(sp.shape, xx, yy, pos[f, i, 0], pos[f, i, 1], sp.radius)
            img[m] = SPRITE_RGB[sp.colour]
            total = max(int(m.sum()), 1)
            vis[f, i] = (m & ~wall).sum() / total
        img[wall] = WALL_RGB
        frames[f] = img
    # later sprites occlude earlier ones: visibility accounts for the wall only (sprites rarely overlap)
    return Clip(scene.spec.text(), frames, pos, vis, offs, scene)


def make_clip(spec: SceneSpec, seed: int, n_frames: int, cfg: WorldConfig = WorldConfig()) -> Clip:
    """Convenience: build the scene for (spec, seed) and render its first n_frames."""
    return render(build_scene(spec, seed, cfg), n_frames)
