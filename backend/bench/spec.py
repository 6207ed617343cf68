"""Policy specs of the benchmarks: 'name[:key=value;...]' strings and the per-run scores they report."""

from __future__ import annotations

SCORES = (
    "adherence",
    "identity_persistence",
    "background_revisit",
    "landmark_revisit",
    "drift",
    "extra_objects",
    "sink_collapses",  # frames snapping back to the first frames (backend.sink_collapse), events per video
)


def split_spec(spec: str) -> tuple[str, dict]:
    """'h2o:storage=int4;alpha=0.3' -> ('h2o', {'storage': 'int4', 'alpha': 0.3})."""
    from ..settings import parse_params

    name, _, params = spec.partition(":")
    return name, parse_params(params)
