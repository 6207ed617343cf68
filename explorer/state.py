"""Server-side state: the loaded models and one Workspace per browser session (keyed by Gradio's
session hash), so heavy objects never travel through `gr.State` and two sessions never see each other."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .compare import Comparison
from .run import Run


@dataclass
class Scrub:
    """One tab's time axis: the scrubbed frame every view shows, or the newest frame while following live.

    The server pushes the scrubber's value while following; a change event that echoes one of the recently
    pushed values is not a user's move (`is_echo`), so a streamed update never reads as a scrub."""

    frame: int = 0
    follow: bool = True
    pushed: deque = field(default_factory=lambda: deque(maxlen=16))

    def push(self, frame: int) -> int:
        self.frame = frame
        self.pushed.append(frame)
        return frame

    def is_echo(self, frame: int, follow_in_browser: bool) -> bool:
        return self.follow and follow_in_browser and frame in self.pushed


@dataclass
class Workspace:
    run: Run | None = None
    compare: Comparison | None = None
    run_saved: tuple[str, int] | None = None  # (session id, frames saved) of the current run
    compare_saved: tuple[str, int] | None = None
    token: int | None = None  # token id picked for the drill-down
    scrub: dict[str, Scrub] = field(default_factory=lambda: {"run": Scrub(), "compare": Scrub()})
    streaming: set[str] = field(default_factory=set)  # 'run' / 'compare' while a stream steps it
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
                    r.abort()
            return ws

    def drop(self, key: str | None) -> None:
        with self._lock:
            ws = self._items.pop(key or "anonymous", None)
        if ws is not None:
            for r in ([ws.run] if ws.run else []) + (ws.compare.runs if ws.compare else []):
                r.abort()

    def __len__(self) -> int:
        return len(self._items)
