"""Fake ``NullPreview``, after picamera2/previews/null_preview.py: the thread that runs
the camera's event loop (``Picamera2.process_requests``) when no window shows it."""

from __future__ import annotations

import threading
from typing import Any

from .._fake import STATE


class NullPreview:
    def __init__(self, x=None, y=None, width=None, height=None, transform=None) -> None:
        self.size = (width, height)
        self._abort = threading.Event()
        self._started = threading.Event()
        self.picam2: Any = None
        self.thread: threading.Thread | None = None

    def thread_func(self, picam2: Any) -> None:
        self._started.set()
        while not self._abort.is_set():
            if picam2._notify.wait(0.2):  # the real one selects on the camera's notify pipe
                picam2._notify.clear()
                if not self.handle_request(picam2):
                    return

    def handle_request(self, picam2: Any) -> bool:
        """Run the event loop once.  The real one logs an exception of
        ``process_requests`` (at ERROR, with its traceback) and raises it again, which
        ends this thread: the camera's event loop is dead from then on.  The fake ends
        the thread too, recording the exception instead of logging it."""
        try:
            picam2.process_requests(self)
        except Exception as exc:
            STATE.record("process_requests failed", error=exc)
            return False
        return True

    def start(self, picam2: Any) -> None:
        self.picam2 = picam2
        picam2.attach_preview(self)
        self._started.clear()
        self._abort.clear()
        self.thread = threading.Thread(target=self.thread_func, args=(picam2,), daemon=True)
        self.thread.start()
        self._started.wait()

    def render_request(self, completed_request: Any) -> None:
        pass

    def stop(self) -> None:
        self._abort.set()
        if self.thread is not None:
            self.thread.join()
        self.picam2.detach_preview()
        self.picam2 = None
