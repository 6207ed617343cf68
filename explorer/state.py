"""Server-side state: the loaded models and one Workspace per browser session (keyed by Gradio's
session hash), so heavy objects never travel through `gr.State` and two sessions never see each other."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .compare import Comparison
from .run import Run


@dataclass
class Workspace:
    run: Run | None = None
    compare: Comparison | None = None
    run_saved: tuple[str, int] | None = None       # (session id, frames saved) of the current run
    compare_saved: tuple[str, int] | None = None
    token: int | None = None                       # token id picked for the drill-down
    lock: threading.RLock = field(default_factory=threading.RLock)
    touched: float = field(default_factory=time.time)


class Registry:
    """Workspaces by session hash; the least recently used are dropped beyond `capacity`."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: OrderedDict[str, Workspace] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> Workspace:
        key = key or "anonymous"
        with self._lock:
            ws = self._items.pop(key, None) or Workspace()
            ws.touched = time.time()
            self._items[key] = ws
            while len(self._items) > self.capacity:
                _, old = self._items.popitem(last=False)
                for r in ([old.run] if old.run else []) + (old.compare.runs if old.compare else []):
                    r.stop()
            return ws

    def drop(self, key: str | None) -> None:
        with self._lock:
            ws = self._items.pop(key or "anonymous", None)
        if ws is not None:
            for r in ([ws.run] if ws.run else []) + (ws.compare.runs if ws.compare else []):
                r.stop()

    def __len__(self) -> int:
        return len(self._items)
