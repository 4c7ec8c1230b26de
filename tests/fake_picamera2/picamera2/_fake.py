"""What the fake records, and the knobs tests turn (not part of the real API)."""

from __future__ import annotations

import threading
from typing import Any


class FakeState:
    """Shared by every fake object of one import of the fake package."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: ``(method name, arguments)`` in call order.
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: How many cameras are attached.
        self.cameras = 1
        #: Camera numbers currently open (by this process or, if a test adds one, another).
        self.acquired: set[int] = set()
        #: Cleared, the sensor stops delivering frames (a cable pulled out).
        self.delivering = threading.Event()
        self.delivering.set()
        #: JPEGs made by every encoder so far.
        self.frames_encoded = 0

    def record(self, method: str, /, **arguments: Any) -> None:
        with self.lock:
            self.calls.append((method, arguments))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]

    def arguments(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [args for n, args in self.calls if n == name]


STATE = FakeState()
