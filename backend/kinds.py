"""The kinds of generator the tools serve, and what differs between them outside the model protocol.

- `world`: the project's own DiT on the procedural world (`models.dit.VideoDiT`): prompts in the world's grammar
  (`prompt.parse`), colour guidance (a second pass with the prompt's colours left open), videos scored by the
  world's evaluator (object tracks, adherence, identity: `consistency.evaluate_video`).
- `wan`: a Wan2.1-based chunk-causal generator (`models.wan.WanCausal`, Self-Forcing / CausVid weights): free
  text through UMT5, Self-Forcing's own sampling (`wan_parts.WAN_SAMPLER`), no guidance, no ground-truth
  evaluator (fidelity against the full cache is what measures a policy there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PROMPT_CHARS = 2000  # free-text prompts: UMT5 sees at most 512 tokens, which the model checks itself


def _world_prompt(prompt: str) -> None:
    from .prompt import parse

    parse(prompt)


def _free_text(prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: describe the video to generate")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are taken")


def _wan_sampler() -> dict:
    from .models.wan_parts import WAN_SAMPLER

    return dict(WAN_SAMPLER)


@dataclass(frozen=True)
class ModelKind:
    name: str
    check_prompt: Callable[[str], None]  # raises ValueError with a clear message (without loading a model)
    sampler: Callable[[], dict] = field(default=dict)  # SamplerConfig fields of the generator's own sampling
    guidance: bool = False  # colour guidance exists
    world: bool = False  # the world's grammar and evaluator apply
    prompt_help: str = ""
    examples: tuple[str, ...] = ()


KINDS: dict[str, ModelKind] = {
    "world": ModelKind(
        "world",
        _world_prompt,
        guidance=True,
        world=True,
        prompt_help="words of the world's grammar",
        examples=(
            "a red circle and a square on blue stripes behind a wall",
            "a yellow triangle and a circle on green checker with a camera pan",
            "a cyan square and a magenta circle on plain red behind a wall with a camera pan",
            "a blue circle and a green triangle on yellow gradient",
        ),
    ),
    "wan": ModelKind(
        "wan",
        _free_text,
        _wan_sampler,
        prompt_help="free text (the UMT5 encoder takes up to 512 tokens)",
        examples=(
            "a red fox trotting through fresh snow in a pine forest, cinematic lighting",
            "a cat walks on the beach at sunset, waves rolling in behind it",
            "a drone shot over a winding river in autumn, slow camera pan",
        ),
    ),
}


def model_kind(name: str) -> ModelKind:
    """The kind called `name`, or a ValueError listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {', '.join(KINDS)}") from None
