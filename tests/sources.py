"""What the driver tests point cameras at: a video file for opencv, the fake picamera2
package for picamera2, and a scripted MJPEG upstream on loopback for the relay.

Shared by the per-driver test files and the contract suite (tests/test_contract.py).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from harness.colours import COLOURS

# -- a video file (opencv) ------------------------------------------------------------
FILE_FPS = 20.0
FILE_FRAMES = 12
FILE_SIZE = (176, 144)


def write_video(path: Path, frames: int = FILE_FRAMES, fps: float = FILE_FPS) -> Path:
    """An MJPG .avi whose frame i is COLOURS[i % 6] (RGB), written by OpenCV itself."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, FILE_SIZE)
    assert writer.isOpened()
    try:
        for i in range(frames):
            red, green, blue = COLOURS[i % len(COLOURS)]
            image = np.zeros((FILE_SIZE[1], FILE_SIZE[0], 3), np.uint8)
            image[:] = (blue, green, red)  # OpenCV is BGR
            writer.write(image)
    finally:
        writer.release()
    return path


# -- the fake picamera2 -------------------------------------------------------------------
FAKE_PICAMERA2 = Path(__file__).resolve().parent / "fake_picamera2"


def forget_picamera2() -> None:
    """Drop every imported picamera2 module, so the next import starts afresh."""
    for name in list(sys.modules):
        if name == "picamera2" or name.startswith("picamera2."):
            del sys.modules[name]


def use_fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Put the fake package on sys.path for this test (freshly imported); return its
    recorded state (``picamera2._fake.STATE``).  Call :func:`forget_picamera2` after."""
    forget_picamera2()
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2))
    return importlib.import_module("picamera2._fake").STATE


# -- a scripted MJPEG upstream (the relay) -------------------------------------------------
class ScriptedUpstream:
    """A raw HTTP server on a thread: records each request's headers and answers with
    ``respond(headers)``'s byte chunks; then holds the connection open until closed,
    or closes it at once when ``hold`` is False."""

    def __init__(self, respond: Callable[[dict[str, str]], Iterable[bytes]], hold: bool = True) -> None:
        self.respond = respond
        self.hold = hold
        self.requests: list[dict[str, str]] = []
        self.released = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def url(self, path: str = "/video", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def stream(self, bodies: list[bytes], interval_s: float) -> Iterator[bytes]:
        """A ``respond`` result: an endless MJPEG stream of ``bodies`` in turn, one part
        every ``interval_s`` (framed as this server does), until :meth:`close`."""
        yield ok_head("multipart/x-mixed-replace;boundary=frame")
        for body in itertools.cycle(bodies):
            yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                len(body),
                body,
            )
            if self.released.wait(interval_s):  # the frame rate, ended by close()
                return

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                headers[":path"] = lines[0].split()[1]
                self.requests.append(headers)
                for chunk in self.respond(headers):
                    conn.sendall(chunk)
            except OSError:
                return
            if self.hold:
                self.released.wait(30)

    def close(self) -> None:
        """Stop listening and end every connection (a camera then sees its upstream go away)."""
        self.released.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.accepter.join(5)
        for thread in self.threads:
            thread.join(5)


def ok_head(content_type: str = "multipart/x-mixed-replace;boundary=--myboundary") -> bytes:
    return b"HTTP/1.0 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n"
