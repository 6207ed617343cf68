"""The benchmarks' per-run result caches (JSON under runs/): written atomically, read forgivingly.

Every sweep resumes from these files, and two workers (or a killed run) can meet at one of them, so a
result is written to a temporary file beside it and renamed over the target (a reader sees the old file
or the new one, never half of one). A file that still cannot be parsed (written before this, or damaged)
reads as missing, so the run is redone instead of the sweep stopping."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path


def write_result(path, obj) -> None:
    """JSON-dump `obj` to `path` atomically (parent folders created)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def read_result(path) -> dict | None:
    """The cached result at `path`, or None when it is missing or not a readable JSON object."""
    try:
        out = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None
