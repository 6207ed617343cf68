"""Prompt grammar and tokenizer of the procedural world.

Grammar (words are case-insensitive, commas and full stops are ignored)::

    prompt     := object ("and" object){0,2} "on" background [wall] [pan]
    object     := ("a" | "an") [colour] shape
    background := [colour] pattern | pattern [colour]
    wall       := "behind" "a" "wall"
    pan        := "with" "a" "camera" "pan"

Example: ``"a red circle and a square on blue stripes behind a wall with a camera pan"``.
A missing colour is *open*: the first frames decide it and later frames must remember it.

The model sees a prompt as ``N_PROMPT_TOKENS`` slot tokens (one per object, background colour, pattern,
wall, pan); they are the prefix of the self-attention sequence and live in the KV cache as anchors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta")
SHAPES = ("circle", "square", "triangle")
PATTERNS = ("plain", "stripes", "checker", "gradient")
FUNCTION_WORDS = ("a", "an", "and", "on", "behind", "wall", "with", "camera", "pan")
VOCAB = tuple(sorted(set(COLOURS + SHAPES + PATTERNS + FUNCTION_WORDS)))
MAX_OBJECTS = 3
ANY = None  # an open attribute

# slot layout of the model's prompt tokens
N_PROMPT_TOKENS = MAX_OBJECTS + 4  # 3 objects, bg colour, pattern, wall, pan
# per-slot value counts: object = (colour|any) x (shape|none); bg colour|any; pattern; flag; flag
OBJ_VALUES = (len(COLOURS) + 1) * (len(SHAPES) + 1)
SLOT_VALUES = (OBJ_VALUES,) * MAX_OBJECTS + (len(COLOURS) + 1, len(PATTERNS), 2, 2)
SLOT_OFFSETS = tuple(sum(SLOT_VALUES[:i]) for i in range(len(SLOT_VALUES)))
PROMPT_VOCAB_SIZE = sum(SLOT_VALUES)


def object_factors() -> tuple[list[int], list[int]]:
    """For every prompt token id, the colour and the shape of the object slot value it encodes: two lists of
    PROMPT_VOCAB_SIZE ids, colour in [0, len(COLOURS)] (the last = open), shape in [0, len(SHAPES)] (the last =
    no object); tokens of the other slots get len(COLOURS) + 1 and len(SHAPES) + 1 (not an object)."""
    colour = [len(COLOURS) + 1] * PROMPT_VOCAB_SIZE
    shape = [len(SHAPES) + 1] * PROMPT_VOCAB_SIZE
    for i in range(MAX_OBJECTS):
        for v in range(OBJ_VALUES):
            colour[SLOT_OFFSETS[i] + v], shape[SLOT_OFFSETS[i] + v] = divmod(v, len(SHAPES) + 1)
    return colour, shape


class PromptError(ValueError):
    """A prompt that the world's grammar does not accept."""


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt fixes about a scene; ``None`` colours are open."""

    objects: tuple[tuple[str | None, str], ...]  # (colour or None, shape), 1-3 of them
    bg_colour: str | None
    pattern: str
    wall: bool = False
    pan: bool = False

    def __post_init__(self):
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise PromptError(f"a scene has 1-{MAX_OBJECTS} objects, got {len(self.objects)}")
        for colour, shape in self.objects:
            if colour is not None and colour not in COLOURS:
                raise PromptError(f"unknown colour {colour!r}")
            if shape not in SHAPES:
                raise PromptError(f"unknown shape {shape!r}")
        if self.bg_colour is not None and self.bg_colour not in COLOURS:
            raise PromptError(f"unknown colour {self.bg_colour!r}")
        if self.pattern not in PATTERNS:
            raise PromptError(f"unknown pattern {self.pattern!r}")

    def text(self) -> str:
        """Canonical prompt text (parse(text()) == self)."""
        objs = []
        for colour, shape in self.objects:
            words = [colour, shape] if colour else [shape]
            objs.append(("an " if words[0][0] in "aeiou" else "a ") + " ".join(words))
        bg = (
            self.pattern
            if self.bg_colour is None
            else (f"plain {self.bg_colour}" if self.pattern == "plain" else f"{self.bg_colour} {self.pattern}")
        )
        s = " and ".join(objs) + " on " + bg
        if self.wall:
            s += " behind a wall"
        if self.pan:
            s += " with a camera pan"
        return s

    def open_colours(self) -> SceneSpec:
        """The same scene with every object colour left open: the reference of colour guidance."""
        return SceneSpec(
            tuple((None, shape) for _, shape in self.objects), self.bg_colour, self.pattern, self.wall, self.pan
        )

    def shifted_shapes(self) -> SceneSpec:
        """The same scene with every object's shape moved to the next one (circle -> square -> triangle ->
        circle): each colour bound to a wrong shape, the negative reference of shape guidance."""
        nxt = {s: SHAPES[(i + 1) % len(SHAPES)] for i, s in enumerate(SHAPES)}
        objects = tuple((colour, nxt[shape]) for colour, shape in self.objects)
        return SceneSpec(objects, self.bg_colour, self.pattern, self.wall, self.pan)

    def tokens(self) -> list[int]:
        """The model's prompt token ids, one per slot: ``[N_PROMPT_TOKENS]``."""
        vals = []
        for i in range(MAX_OBJECTS):
            if i < len(self.objects):
                colour, shape = self.objects[i]
                c = len(COLOURS) if colour is None else COLOURS.index(colour)
                s = SHAPES.index(shape)
            else:
                c, s = len(COLOURS), len(SHAPES)  # "no object"
            vals.append(c * (len(SHAPES) + 1) + s)
        vals.append(len(COLOURS) if self.bg_colour is None else COLOURS.index(self.bg_colour))
        vals.append(PATTERNS.index(self.pattern))
        vals += [int(self.wall), int(self.pan)]
        return [o + v for o, v in zip(SLOT_OFFSETS, vals)]


def tokenize(prompt: str) -> list[str]:
    """Split a prompt into known words; unknown words raise with the whole vocabulary listed."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty; try e.g. 'a red circle on blue stripes'")
    words = re.sub(r"[,.;!]", " ", prompt.lower()).split()
    unknown = [w for w in words if w not in VOCAB]
    if unknown:
        raise PromptError(
            f"unknown word(s) {', '.join(repr(w) for w in unknown)}; the vocabulary is: {' '.join(VOCAB)}"
        )
    return words


def parse(prompt: str) -> SceneSpec:
    """Parse a prompt into a SceneSpec, with a clear message on any grammar error."""
    words = tokenize(prompt)
    if "on" not in words:
        raise PromptError(
            f"a prompt needs a background: '... on <colour> <pattern>' with a pattern from {', '.join(PATTERNS)}"
        )
    on = words.index("on")
    head, tail = words[:on], words[on + 1 :]
    objects, cur = [], []
    for w in head + ["and"]:
        if w == "and":
            obj = [x for x in cur if x not in ("a", "an")]
            if not obj:
                raise PromptError("expected an object such as 'a red circle' before 'and'/'on'")
            colour = [x for x in obj if x in COLOURS]
            shape = [x for x in obj if x in SHAPES]
            if len(shape) != 1 or len(colour) > 1 or len(colour) + len(shape) != len(obj):
                raise PromptError(
                    f"cannot read object {' '.join(obj)!r}: use '[colour] shape', "
                    f"colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}"
                )
            objects.append((colour[0] if colour else None, shape[0]))
            cur = []
        else:
            cur.append(w)
    if len(objects) > MAX_OBJECTS:
        raise PromptError(f"at most {MAX_OBJECTS} objects per prompt, got {len(objects)}")
    if len(set(objects)) != len(objects) and all(c is not None for c, _ in objects):
        raise PromptError("objects must differ in colour or shape")
    wall = pan = False
    rest = " ".join(tail)
    for phrase, flag in (("behind a wall", "wall"), ("with a camera pan", "pan")):
        if phrase in rest:
            rest = rest.replace(phrase, " ")
            wall = wall or flag == "wall"
            pan = pan or flag == "pan"
    bg = rest.split()
    colour = [x for x in bg if x in COLOURS]
    pattern = [x for x in bg if x in PATTERNS]
    if len(pattern) != 1 or len(colour) > 1 or len(colour) + len(pattern) != len(bg):
        raise PromptError(
            f"cannot read background {' '.join(bg)!r}: use '[colour] pattern' with a pattern "
            f"from {', '.join(PATTERNS)}, then optionally 'behind a wall' and 'with a camera pan'"
        )
    return SceneSpec(tuple(objects), colour[0] if colour else None, pattern[0], wall, pan)
