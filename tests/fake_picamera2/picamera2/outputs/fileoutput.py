"""Fake ``FileOutput``, after picamera2/outputs/fileoutput.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .._fake import STATE
from .output import Output


class FileOutput(Output):
    def __init__(self, file: Any = None, pts: Any = None, split: int | None = None) -> None:
        super().__init__(pts=pts)
        STATE.record("FileOutput", file=file)
        self.dead = False
        self._needs_close = False
        self._firstframe = True
        if file is None:
            self.fileoutput = None
        elif isinstance(file, str | Path):
            self.fileoutput = open(file, "wb")  # noqa: SIM115 - closed in close(), as the real one does
            self._needs_close = True
        elif isinstance(file, io.BufferedIOBase):
            self.fileoutput = file
        else:
            raise RuntimeError("Must pass io.BufferedIOBase")

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio=False
    ) -> None:
        if audio:
            raise RuntimeError("Fileoutput does not support audio")
        if self.fileoutput is not None and self.recording:
            if self._firstframe:
                if not keyframe:
                    return
                self._firstframe = False
            self._write(frame, timestamp)

    def stop(self) -> None:
        super().stop()
        self.close()

    def close(self) -> None:
        if self._needs_close:
            self.fileoutput.close()

    def _write(self, frame: Any, timestamp: int | None = None) -> None:
        try:
            self.fileoutput.write(frame)
            self.fileoutput.flush()
            self.outputtimestamp(timestamp)
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError, ValueError):
            self.dead = True
