"""What the fake records, and the knobs tests turn (not part of the real API)."""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

#: The environment variable naming the encoder's fault file (see :meth:`FakeState.encoder_fault`).
FAULT_FILE_ENV = "FAKE_PICAMERA2_FAULT_FILE"


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
        #: Frames the encoder failed on (the fault file's doing), and the good frames
        #: left before the next failure while the fault file exists (None: no fault).
        self.encoder_faults = 0
        self._good_frames_left: int | None = None

    def record(self, method: str, /, **arguments: Any) -> None:
        with self.lock:
            self.calls.append((method, arguments))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]

    def arguments(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [args for n, args in self.calls if n == name]

    def encoder_fault(self) -> OSError | None:
        """The error the encoder raises for the frame it is about to encode, or None.

        While the file named by ``$FAKE_PICAMERA2_FAULT_FILE`` exists, the encoder
        makes as many more good frames as the file's number says (none if it is
        empty), then fails on every frame, as a wedged hardware encoder does:
        ``OSError(EIO)``, what the real V4L2 encoder's ``ioctl(VIDIOC_QBUF)``
        raises.  A recording started while the file exists fails at its first
        frame.  Removing the file clears the fault.  The file is read at every
        frame, in any process that imports the fake: write it whole (rename it
        into place) from a test.  The frames failed on so far are written to the
        file's name plus ``.failed``, for a test in another process to watch.
        """
        path = os.environ.get(FAULT_FILE_ENV)
        if not path:
            return None
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            with self.lock:
                self._good_frames_left = None
            return None
        with self.lock:
            if self._good_frames_left is None:
                self._good_frames_left = int(text or 0)
            if self._good_frames_left > 0:
                self._good_frames_left -= 1
                return None
            self.encoder_faults += 1
            failed = self.encoder_faults
        with open(path + ".failed", "w", encoding="ascii") as f:
            f.write(str(failed))
        return OSError(errno.EIO, os.strerror(errno.EIO))


STATE = FakeState()
