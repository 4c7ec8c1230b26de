"""A source that dies mid-frame, driver by driver, through a real server and a real viewer.

The product's promise: a viewer of a camera whose source fails sees the "no signal"
picture within 2 s of the fault, and ``/status`` says the camera is offline with its
error; once the source is back, the viewer gets live frames again within 3 s, without
reconnecting.  Each test runs ``server.py`` as a process, watches ``/stream.mjpg`` with
a raw-socket viewer (every part decoded with Pillow) and polls ``/status``:

* picamera2: the fake library's encoder fails mid-stream (``OSError(EIO)``, what the
  real V4L2 encoder's ioctl raises, which ends the library's event loop), and keeps
  failing until the test clears the fault;
* opencv: the network stream it reads (another server process) is killed with
  SIGKILL, or stopped with SIGSTOP, and later started again, or continued;
* mjpeg (the relay): an upstream of the test's own on loopback breaks its stream in
  each way an upstream can (a part cut short by a closed connection, a Content-Length
  too long or too short, 10 MB of garbage, a 100 MB part, a stall mid-part) while the
  server's memory is watched, then serves good parts again.

The times are measured from the moment the test made the fault or mended the source
(for a process started again: from when it listens), so they include everything a
viewer waits for.  Every fault persists until mended, and the test mends it right
after one more of the driver's attempts has met it: the longest wait there is.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness.colours import COLOURS, jpeg
from harness.multipart import Part
from harness.process import ServerProcess
from tests.camera_polling import wait_for
from tests.mjpeg_client import StreamReader
from tests.sources import FAKE_PICAMERA2

#: The promise: "no signal" this soon after a fault, live frames this soon after the source is back.
NO_SIGNAL_S = 2.0
RECOVERY_S = 3.0
#: The relay server's memory may grow this much over its size before a fault.
RELAY_MEMORY_BOUND = 40 * 1024 * 1024

pytestmark = [pytest.mark.slow, pytest.mark.alone]

log = logging.getLogger(__name__)


# -- what the viewer sees ------------------------------------------------------------
def is_no_signal(body: bytes) -> bool:
    """True for the "no signal" picture (dark grey behind its text), False for a live
    frame of these tests (solid colours, each with a channel at full brightness)."""
    with Image.open(io.BytesIO(body)) as image:
        image.load()  # the whole picture decodes
        red, green, blue = image.convert("RGB").getpixel((1, 1))[:3]
    return max(red, green, blue) < 100


class Viewer:
    """An MJPEG viewer of ``/stream.mjpg`` (tests/mjpeg_client.py's reader, on a thread)."""

    def __init__(self, port: int) -> None:
        self.reader = StreamReader(port)

    def first(self, since: float, no_signal: bool, timeout_s: float) -> Part:
        """The first part that arrived at ``since`` (time.monotonic) or later and is (or,
        with ``no_signal`` False, is not) the "no signal" picture; AssertionError after
        ``timeout_s``."""
        reader = self.reader
        deadline = time.monotonic() + timeout_s
        checked = 0
        with reader.changed:
            while True:
                for part in reader.parts[checked:]:
                    if part.arrived >= since and is_no_signal(part.body) == no_signal:
                        return part
                checked = len(reader.parts)
                remaining = deadline - time.monotonic()
                what = '"no signal"' if no_signal else "a live frame"
                assert remaining > 0, f"no {what} within {timeout_s} s ({checked} parts in all)"
                reader.changed.wait(remaining)

    def close(self) -> None:
        self.reader.close()


@pytest.fixture
def viewers() -> Iterator[Callable[[int], Viewer]]:
    made: list[Viewer] = []

    def make(port: int) -> Viewer:
        made.append(Viewer(port))
        return made[-1]

    yield make
    for viewer in made:
        viewer.close()


def camera_status(server: ServerProcess) -> dict[str, Any]:
    """The first (only) camera's entry of the server's ``/status``."""
    code, _headers, body = server.get("/status", timeout_s=5)
    assert code == 200
    return next(iter(json.loads(body)["cameras"].values()))


def wait_status(
    server: ServerProcess, check: Callable[[dict[str, Any]], bool], until: float, what: str
) -> dict[str, Any]:
    """Poll ``/status`` until ``check`` holds for the camera; AssertionError once
    time.monotonic() passes ``until``."""
    while True:
        status = camera_status(server)
        if check(status):
            return status
        assert time.monotonic() < until, f"{what}: not by the deadline; last /status: {status}"
        time.sleep(0.02)  # polling a server process with a deadline


def offline(status: dict[str, Any]) -> bool:
    return status["online"] is False and bool(status["error"])


def online(status: dict[str, Any]) -> bool:
    return status["online"] is True and status["error"] is None


@dataclass
class Outage:
    """What one fault cost the viewer: seconds from the fault to "no signal" (the viewer's
    picture and /status), and from the mend to live frames again."""

    no_signal_s: float
    status_offline_s: float
    error: str
    recovery_s: float = 0.0
    status_online_s: float = 0.0


def expect_no_signal(server: ServerProcess, viewer: Viewer, fault_at: float) -> Outage:
    """The viewer gets "no signal" and /status says offline, each within NO_SIGNAL_S of ``fault_at``."""
    part = viewer.first(fault_at, no_signal=True, timeout_s=NO_SIGNAL_S + 3)
    status = wait_status(server, offline, fault_at + NO_SIGNAL_S + 3, "offline in /status")
    status_s = time.monotonic() - fault_at
    outage = Outage(part.arrived - fault_at, status_s, status["error"])
    assert outage.no_signal_s <= NO_SIGNAL_S, f'"no signal" {outage.no_signal_s:.2f} s after the fault'
    assert outage.status_offline_s <= NO_SIGNAL_S + 0.05, outage  # + one poll of /status
    return outage


def expect_recovery(server: ServerProcess, viewer: Viewer, mended_at: float, outage: Outage) -> Outage:
    """Live frames again and /status online, each within RECOVERY_S of ``mended_at``."""
    part = viewer.first(mended_at, no_signal=False, timeout_s=RECOVERY_S + 5)
    wait_status(server, online, mended_at + RECOVERY_S + 5, "online in /status")
    outage.recovery_s = part.arrived - mended_at
    outage.status_online_s = time.monotonic() - mended_at
    log.info("%s", outage)  # the figures (pytest -rP shows them)
    assert outage.recovery_s <= RECOVERY_S, f"live frames {outage.recovery_s:.2f} s after the mend"
    assert outage.status_online_s <= RECOVERY_S + 0.05, outage
    return outage


def failure_warnings(server: ServerProcess) -> list[str]:
    return [line for line in server.log_text().splitlines() if "camera failed:" in line]


# -- picamera2: the encoder fails mid-stream ---------------------------------------------
#: How long the release of the hanging camera takes (the fake's stop_recording), seconds.
RELEASE_S = 4.0


def picamera2_server(start_server: Callable[..., ServerProcess], tmp_path: Path, **env: str) -> ServerProcess:
    """A server of the fake picamera2 at 320x240 and 30 fps, ``env`` added to its environment."""
    path = os.pathsep.join(filter(None, [str(FAKE_PICAMERA2), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "FAKE_PICAMERA2_FAULT_FILE": str(tmp_path / "encoder-fault"), **env}
    return start_server("--camera", "picamera2", "--width", "320", "--height", "240", "--fps", "30", env=env)


def break_encoder(tmp_path: Path, good_frames: int) -> float:
    """The fake's encoder fails after ``good_frames`` more good frames, on every frame
    until the fault file goes (written whole); returns when, time.monotonic()."""
    ready = tmp_path / "encoder-fault.new"
    ready.write_text(str(good_frames))
    fault_at = time.monotonic()
    ready.rename(tmp_path / "encoder-fault")
    return fault_at


def encoder_failures(tmp_path: Path) -> int:
    """The frames the server's fake encoder has failed on so far."""
    try:
        return int((tmp_path / "encoder-fault.failed").read_text() or 0)
    except FileNotFoundError:
        return 0


def test_picamera2_encoder_failing_mid_stream(start_server, viewers, tmp_path: Path):
    server = picamera2_server(start_server, tmp_path)
    viewer = viewers(server.port)
    viewer.first(0, no_signal=False, timeout_s=20)
    wait_status(server, online, time.monotonic() + 10, "online")

    fault_at = break_encoder(tmp_path, 5)
    outage = expect_no_signal(server, viewer, fault_at)
    assert outage.error == "the Pi camera 0 is sending no frames"

    # Mend it right after the driver opened the camera again and its encoder failed
    # again, at the first frame: the longest wait there is.
    failed = encoder_failures(tmp_path)
    wait_for(lambda: encoder_failures(tmp_path) > failed, what="a reopening, failed", poll_s=0.01)
    (tmp_path / "encoder-fault").unlink()
    expect_recovery(server, viewer, time.monotonic(), outage)
    assert len(failure_warnings(server)) == 1, failure_warnings(server)  # one line for the outage


def test_picamera2_whose_release_hangs_shows_no_signal_at_once(start_server, viewers, tmp_path: Path):
    """A failed camera whose release takes long (a wedged libcamera pipeline): viewers
    see "no signal" without waiting for it, and live frames once it has let go."""
    server = picamera2_server(start_server, tmp_path, FAKE_PICAMERA2_STOP_DELAY_S=f"{RELEASE_S:g}")
    viewer = viewers(server.port)
    viewer.first(0, no_signal=False, timeout_s=20)
    fault_at = break_encoder(tmp_path, 0)
    outage = expect_no_signal(server, viewer, fault_at)
    mended_at = time.monotonic()
    (tmp_path / "encoder-fault").unlink()
    part = viewer.first(mended_at, no_signal=False, timeout_s=RELEASE_S + RECOVERY_S + 5)
    outage.recovery_s = part.arrived - mended_at
    log.info("%s", outage)
    assert outage.recovery_s <= RELEASE_S + RECOVERY_S, outage


# -- opencv: the network stream's process is killed, or stopped ---------------------------
FAULTS_OF_A_PROCESS = {
    # the fault, the mend (None: start it again), and the failures to wait for before the mend
    # (a stopped process accepts connections, so each attempt waits the open timeout)
    "killed": (signal.SIGKILL, None, 3),
    "stopped": (signal.SIGSTOP, signal.SIGCONT, 1),
}


@pytest.mark.parametrize("how", sorted(FAULTS_OF_A_PROCESS))
def test_opencv_stream_whose_source_process_dies(start_server, viewers, frames_dir, how):
    fault, mend, retries = FAULTS_OF_A_PROCESS[how]
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    server = start_server("--camera", "opencv", "--source", upstream.url + "stream.mjpg")
    viewer = viewers(server.port)
    viewer.first(0, no_signal=False, timeout_s=20)
    pid = upstream.proc.pid
    try:
        fault_at = time.monotonic()
        os.kill(pid, fault)
        if fault == signal.SIGKILL:
            upstream.proc.wait(10)
            upstream.stop()  # it has exited: this only forgets it
        outage = expect_no_signal(server, viewer, fault_at)
        # The stream stopped; by the time /status is read, a reopening may have failed too.
        stream = upstream.url + "stream.mjpg"
        assert outage.error in (f"{stream} stopped delivering frames", f"cannot open {stream}"), outage

        # Down for a few attempts: a back-off without its cap would wait 4 s by now.
        failures = camera_status(server)["camera_failures"]
        grown = lambda s: s["camera_failures"] >= failures + retries  # noqa: E731
        wait_status(server, grown, time.monotonic() + 30, "retries")
    finally:
        if mend is not None:
            os.kill(pid, mend)
    if mend is None:
        upstream.start()  # returns once it listens on its port again: the source is back
    expect_recovery(server, viewer, time.monotonic(), outage)


# -- mjpeg: an upstream that breaks its stream ---------------------------------------------
UPSTREAM_FPS = 30.0
UPSTREAM_SIZE = (96, 72)
GOOD_PARTS = [jpeg(colour, UPSTREAM_SIZE) for colour in COLOURS]
#: How far the lying Content-Lengths are off, bytes.
LIE_BYTES = 200
GARBAGE_BYTES = 10 * 1000 * 1000
HUGE_PART_BYTES = 100 * 1000 * 1000


def garbage(size: int) -> bytes:
    """``size`` random bytes (seeded) with no line end, so no boundary line in them."""
    data = random.Random(7).randbytes(size)
    return data.replace(b"\n", b"\x00")


class FaultyUpstream:
    """An MJPEG upstream on loopback, a thread per connection: good parts (solid colours,
    Content-Length framing) at UPSTREAM_FPS until ``fault`` names one of :data:`FAULTS`;
    from then on the open connection (at its next part) and every new one get the
    fault instead, until ``fault`` is None again (a connection held silent stays so)."""

    def __init__(self) -> None:
        self.fault: str | None = None
        #: Connections that have had a fault so far (on each, its first broken part began).
        self.faulted = 0
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/video"
        self.threads: list[threading.Thread] = []
        self._garbage = garbage(GARBAGE_BYTES)
        self._chunk = garbage(1000 * 1000)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"
                )
                index = 0
                faulted = False
                while not self.closed.is_set():
                    fault = self.fault
                    body = GOOD_PARTS[index % len(GOOD_PARTS)]
                    index += 1
                    if fault is None:
                        conn.sendall(part(body))
                    else:
                        if not faulted:
                            faulted = True
                            with self._lock:
                                self.faulted += 1
                        if not FAULTS[fault](self, conn, body):
                            return
                    self.closed.wait(1 / UPSTREAM_FPS)
            except OSError:
                return  # the relay hung up: what it does with a broken stream

    # -- the faults: each sends one broken part (or more); False ends the connection --
    def truncated(self, conn: socket.socket, body: bytes) -> bool:
        conn.sendall(part(body)[: -len(body) // 2])
        return False  # closed mid-part

    def long_length(self, conn: socket.socket, body: bytes) -> bool:
        conn.sendall(part(body, length=len(body) + LIE_BYTES))
        return True

    def short_length(self, conn: socket.socket, body: bytes) -> bool:
        conn.sendall(part(body, length=len(body) - LIE_BYTES))
        return True

    def garbage(self, conn: socket.socket, body: bytes) -> bool:
        conn.sendall(self._garbage)
        return False

    def huge_part(self, conn: socket.socket, body: bytes, length: bool = True) -> bool:
        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
        head += b"Content-Length: %d\r\n\r\n" % HUGE_PART_BYTES if length else b"\r\n"
        conn.sendall(head)
        for _ in range(HUGE_PART_BYTES // len(self._chunk)):
            conn.sendall(self._chunk)
        conn.sendall(b"\r\n")
        return True

    def huge_part_without_length(self, conn: socket.socket, body: bytes) -> bool:
        return self.huge_part(conn, body, length=False)

    def stall(self, conn: socket.socket, body: bytes) -> bool:
        conn.sendall(part(body)[: -len(body) // 2])
        conn.settimeout(0.1)
        while not self.closed.is_set():  # silent, until the relay hangs up
            try:
                if not conn.recv(4096):
                    return False
            except TimeoutError:
                continue
        return False

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(10)


def part(body: bytes, length: int | None = None) -> bytes:
    """One part framed as this server frames them, with a Content-Length (``length``: a lie)."""
    length = len(body) if length is None else length
    return b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (length, body)


FAULTS: dict[str, Callable[[FaultyUpstream, socket.socket, bytes], bool]] = {
    "truncated-part": FaultyUpstream.truncated,
    "content-length-too-long": FaultyUpstream.long_length,
    "content-length-too-short": FaultyUpstream.short_length,
    "10MB-of-garbage": FaultyUpstream.garbage,
    "100MB-part": FaultyUpstream.huge_part,
    "100MB-part-without-content-length": FaultyUpstream.huge_part_without_length,
    "stall-mid-part": FaultyUpstream.stall,
}
#: What /status's error says, for each fault.
LYING_LENGTH = "no whole JPEG for 1.5 s (the parts do not run from SOI to EOI: a wrong Content-Length?)"
ERRORS = {
    "truncated-part": "the upstream closed the stream in the middle of a part",
    "content-length-too-long": LYING_LENGTH,
    "content-length-too-short": LYING_LENGTH,
    "10MB-of-garbage": "no multipart boundary in 8 MB of the stream (--relay-max-part)",
    "100MB-part": "a part of 100 MB is over the 8 MB cap (--relay-max-part)",
    "100MB-part-without-content-length": "a part is over the 8 MB cap (--relay-max-part)",
    "stall-mid-part": "no data for 1.5 s",
}
#: The faults during which the server's memory is watched.
MEMORY_WATCHED = {"10MB-of-garbage", "100MB-part", "100MB-part-without-content-length"}


def memory(pid: int) -> dict[str, int]:
    """The process's resident size now (VmRSS) and its peak so far (VmHWM), bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    made = FaultyUpstream()
    yield made
    made.close()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_relay_of_an_upstream_that_breaks_its_stream(start_server, viewers, upstream, fault):
    server = start_server("--camera", "mjpeg", "--source", upstream.url)
    viewer = viewers(server.port)
    viewer.first(0, no_signal=False, timeout_s=20)
    wait_status(server, online, time.monotonic() + 10, "online")
    pid = server.proc.pid
    before = memory(pid)

    fault_at = time.monotonic()
    upstream.fault = fault
    outage = expect_no_signal(server, viewer, fault_at)

    # Mend it right after the relay's next attempt met the fault: the longest wait there is.
    faulted = upstream.faulted
    wait_for(lambda: upstream.faulted > faulted, timeout_s=10, what="a reconnection, and the fault again")
    after = memory(pid)
    grown = after["VmHWM"] - before["VmRSS"]
    log.info(
        "%s: resident %.1f MiB before the fault, peak %.1f MiB by the reconnection: %.1f MiB more",
        fault,
        before["VmRSS"] / 2**20,
        after["VmHWM"] / 2**20,
        grown / 2**20,
    )
    if fault in MEMORY_WATCHED:
        assert grown < RELAY_MEMORY_BOUND, f"the server grew by {grown / 2**20:.1f} MiB"
    assert outage.error == f"{upstream.url}: {ERRORS[fault]}", outage
    upstream.fault = None
    expect_recovery(server, viewer, time.monotonic(), outage)
    assert len(failure_warnings(server)) == 1, failure_warnings(server)  # one line for the outage
