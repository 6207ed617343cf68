"""Registry of named, pre-configured cache policies (what the CLI, benchmark and UI list)."""
from __future__ import annotations

from typing import Callable

from .base import EvictContext, LayerEviction, Policy, select
from .full import Full
from .window import Window

POLICIES: dict[str, tuple[Callable[..., Policy], str]] = {
    "full": (Full, "never evict: the reference (memory and time grow with every frame)"),
    "window": (Window, "Self-Forcing rolling window: prompt + the newest 16 frames, FIFO"),
}


def make_policy(name: str, **kwargs) -> Policy:
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return POLICIES[name][0](**kwargs)


__all__ = ["POLICIES", "make_policy", "Policy", "EvictContext", "LayerEviction", "select", "Full", "Window"]
