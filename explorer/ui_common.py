"""What the explorer's tabs share: the policy listing, turning inputs into a RunConfig, clear errors, and
serving images."""

from __future__ import annotations

import functools

import gradio as gr

from backend.policies import POLICIES, TITLES, describe_reads, title

from .controller import budget_text
from .export import cached_png
from .run import RunConfig


def policy_choices(exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(display name, registry id) of every policy, by display name."""
    return [(title(n), n) for n in sorted(POLICIES, key=lambda n: TITLES.get(n, n).lower()) if n not in exclude]


def config_from(prompt, seed, frames, guidance, policy, budget, unit, params, model: str = "world") -> RunConfig:
    """The UI's inputs as a RunConfig for the served kind of model (`Explorer.kind`)."""
    try:
        seed, frames = int(seed), int(frames)
    except (TypeError, ValueError):
        raise ValueError(f"seed and frames must be whole numbers, got {seed!r} and {frames!r}") from None
    try:
        guidance = None if guidance is None else float(guidance)
    except (TypeError, ValueError):
        raise ValueError(f"colour guidance must be a number (1 = off), got {guidance!r}") from None
    return RunConfig(
        str(prompt or "").strip(),
        seed,
        frames,
        str(policy),
        budget_text(budget, unit, policy),
        str(params or "").strip(),
        guidance,
        model,
    )


def errors(fn):
    """Turn the controller's clear ValueErrors (and KeyErrors) into gr.Error messages."""

    @functools.wraps(fn)
    def inner(*a, **kw):
        try:
            return fn(*a, **kw)
        except gr.Error:
            raise
        except (ValueError, KeyError) as e:
            raise gr.Error(str(e.args[0] if isinstance(e, KeyError) and e.args else e), duration=8) from e

    return inner


def errors_gen(fn):
    @functools.wraps(fn)
    def inner(*a, **kw):
        try:
            yield from fn(*a, **kw)
        except gr.Error:
            raise
        except (ValueError, KeyError) as e:
            raise gr.Error(str(e.args[0] if isinstance(e, KeyError) and e.args else e), duration=8) from e

    return inner


def served_png(img, folder: str):
    """A numpy image (or a pair, for the wipe slider; or None) -> path(s) of atomically written PNGs in Gradio's
    cache (see export.cached_png: Gradio's own numpy path can serve a half-rewritten file under concurrency)."""
    if img is None:
        return None
    if isinstance(img, tuple):
        return tuple(served_png(i, folder) for i in img)
    return cached_png(img, folder)


BUDGET_DEFAULT = {"frames": (1, 8), "tokens": (64, 576), "% of full": (0.5, 12.5), "KB": (16, 512)}  # step, value


def policy_help(name: str) -> str:
    """The policy's one-line description and what attention it reads (its cost at every commit)."""
    if name not in POLICIES:
        return ""
    return f"{POLICIES[name].help}. With its defaults it {describe_reads(name)[1]}."
