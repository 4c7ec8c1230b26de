"""Fake ``Output`` base, after picamera2/outputs/output.py."""

from __future__ import annotations

from typing import Any


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio=False
    ) -> None:
        """Called by the encoder with each encoded frame."""

    def outputtimestamp(self, timestamp: int | None) -> None:
        pass
