"""Atomic file writes: write a temporary file (".partial-*") beside the target, set mode 0o644 and rename
it over the target with os.replace, so a reader (a resuming benchmark, a browser, another worker) never
sees a half-written file and a failed write leaves nothing behind. Parent folders are created."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"  # prefix of the temporary files


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to `path` (ending in `suffix`, default the target's, for writers that
    infer the format from it); on success chmod 0o644 and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix or path.suffix, dir=path.parent, prefix=PARTIAL)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
