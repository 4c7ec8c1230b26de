"""One viewer, for a shaped link: reads a WebSocket or MJPEG stream as fast as the link allows
for a while, and reports what a person would have seen.

    ip netns exec NS /work/main/.venv/bin/python harness/link_client.py ws://10.213.7.1:8080/ws \\
        --seconds 30 --warmup 10 [--hello] [--progress FILE] [--frames FILE]
    .venv/bin/python harness/link_client.py 'http://127.0.0.1:8080/stream.mjpg?adapt=1' --seconds 10

Per frame it records the ``seq`` and capture time ``t`` the server put in the JPEG
(``camstream seq=... t=...`` comment; for MJPEG without one, the ``X-Timestamp`` header),
the receive time (``time.time()`` when the last byte is in: the server is on the same
machine, so ``recv - t`` is the frame's age with no clock offset), its size in bytes and
its width x height (from the JPEG's SOF).  With ``--hello`` (WebSocket only) it sends
``{}`` first, so the server answers with text messages; ``{"type": "variant", ...}``
ones are kept with their receive time.

Prints one JSON object on stdout when it ends (see :func:`summarise`): after ``--seconds``,
on SIGTERM or SIGINT (early, with what it has), or when the server closes.  ``--progress
FILE`` appends one JSON line per second while it runs (frames shown, width, age, bytes,
the newest variant message), for a test or benchmark that polls the client's view;
``--frames FILE`` writes every frame record (JSON lines) at the end.  Exit status 0,
or 1 if it never got a frame.

Importable for its parsing helpers (:func:`summarise`, :class:`Received`), :func:`command`
(the command line that runs it) and :class:`ClientProcess` (it running, for a test or
benchmark that reads its progress and summary); the server's own :func:`handlers.ws.frame_info` and
:func:`cameras.jpeg.jpeg_size` read each frame.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.exceptions import ConnectionClosed, WebSocketException  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from cameras.jpeg import jpeg_size  # noqa: E402
from handlers.ws import frame_info  # noqa: E402
from harness.multipart import PartParser, parse_head  # noqa: E402
from harness.process import stop_process  # noqa: E402
from harness.stats import percentile  # noqa: E402


def command(url: str, *options: str) -> list[str]:
    """The command line that runs this client on ``url`` with ``options`` (``--seconds``...),
    by this Python, wherever it is started (``ip netns exec``, a CPU pinned with taskset)."""
    return [sys.executable, str(Path(__file__).resolve()), url, *options]


class ClientProcess:
    """This client on ``url`` with ``options`` as a process of its own, started by ``spawn``
    (``subprocess.Popen``, or a shaped link's ``spawn`` to run it in the namespace): its
    summary in ``folder/summary.json``, its stderr in ``folder/stderr``, its per-second
    progress in ``folder/progress.jsonl``; ended by its PID."""

    def __init__(
        self,
        url: str,
        options: Sequence[str],
        folder: Path,
        spawn: Callable[..., subprocess.Popen] = subprocess.Popen,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path = folder / "summary.json"
        self.err_path = folder / "stderr"
        self.progress_path = folder / "progress.jsonl"
        cmd = command(url, *options, "--progress", str(self.progress_path))
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = spawn(cmd, cwd=ROOT, stdout=out, stderr=err)

    def seconds(self) -> list[dict[str, Any]]:
        """The per-second lines written so far (``--progress``)."""
        if not self.progress_path.exists():
            return []
        lines = self.progress_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def summary(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Its summary: after it ends by itself within ``timeout_s``, or at once (SIGTERM: it
        prints what it has) when ``timeout_s`` is None.  RuntimeError if it printed none."""
        if timeout_s is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        stop_process(self.proc)
        text = self.out_path.read_text()
        if not text.strip():
            raise RuntimeError(f"the client printed nothing; stderr: {self.err_path.read_text()[-2000:]}")
        return json.loads(text)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass(frozen=True)
class Received:
    """One frame as it arrived: ``recv`` and ``t`` in unix seconds, ``nbytes`` the
    message's (WebSocket) or part body's (MJPEG) length."""

    seq: int
    t: float
    recv: float
    nbytes: int
    width: int
    height: int

    @property
    def age_s(self) -> float:
        return self.recv - self.t


@dataclass
class Recording:
    """What one run collected: frames, text messages, when it started and ended (unix s)."""

    url: str
    start: float = 0.0
    end: float = 0.0
    frames: list[Received] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)
    texts: int = 0
    error: str | None = None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def shown(frames: Sequence[Received]) -> list[Received]:
    """The frames that were new when they arrived (seq above every seq before): repeats
    of a frame already shown (a server re-sending the newest one) are left out."""
    out = []
    top = -1
    for frame in frames:
        if frame.seq > top:
            out.append(frame)
            top = frame.seq
    return out


def second(rec: Recording, frames: Sequence[Received], index: int) -> dict[str, Any]:
    """The figures of second ``index`` since the start (frames arrived in [i, i+1))."""
    lo, hi = rec.start + index, rec.start + index + 1
    inside = [f for f in frames if lo <= f.recv < hi]
    widths = Counter(f"{f.width}x{f.height}" for f in inside)
    size = widths.most_common(1)[0][0] if widths else None
    return {
        "s": index,
        "fps": len(shown(inside)),
        "size": size,
        "width": int(size.split("x")[0]) if size else None,
        "bytes": sum(f.nbytes for f in inside),
        "age_ms": _ms(statistics.median(f.age_s for f in inside)) if inside else None,
    }


def summarise(rec: Recording, warmup_s: float = 0.0) -> dict[str, Any]:
    """The report of a run, over the window from ``warmup_s`` after the start to the end:

    ``fps`` (new frames per second), ``age_ms`` (median, p95, max of ``recv - t``),
    ``bytes_per_s`` and ``kbit_per_s``, ``sizes`` (frames per ``WxH``), ``size`` and
    ``width`` (the most common in the window); over the whole run: ``first_frame_s``,
    ``final_size`` (of the last frame), ``settle_s`` (seconds from the start to the first
    frame of the last run of frames of that size), ``size_changes`` (``[s, "WxH"]`` each
    time the size changed), ``timeline`` (per second: see :func:`second`), ``variants``
    (the text variant messages, each with ``s``, its receive time from the start).
    """
    frames = rec.frames
    lo = rec.start + warmup_s
    window = [f for f in frames if f.recv >= lo]
    seconds = max(rec.end - lo, 1e-9)
    new = shown(window)
    ages = [f.age_s for f in window]
    sizes = Counter(f"{f.width}x{f.height}" for f in window)
    nbytes = sum(f.nbytes for f in window)
    changes: list[list[Any]] = []
    for frame in frames:
        size = f"{frame.width}x{frame.height}"
        if not changes or changes[-1][1] != size:
            changes.append([round(frame.recv - rec.start, 2), size])
    common = sizes.most_common(1)[0][0] if sizes else None
    full = max(0, int(rec.end - rec.start))
    return {
        "url": rec.url,
        "error": rec.error,
        "seconds": round(seconds, 2),
        "warmup_s": warmup_s,
        "frames": len(window),
        "fps": round(len(new) / seconds, 2),
        "age_ms": {
            "median": _ms(statistics.median(ages)) if ages else None,
            "p95": _ms(percentile(ages, 95)),
            "max": _ms(max(ages)) if ages else None,
        },
        "bytes_per_s": round(nbytes / seconds),
        "kbit_per_s": round(nbytes * 8 / seconds / 1000, 1),
        "mean_frame_bytes": round(nbytes / len(window)) if window else None,
        "sizes": dict(sizes),
        "size": common,
        "width": int(common.split("x")[0]) if common else None,
        "first_frame_s": round(frames[0].recv - rec.start, 3) if frames else None,
        "final_size": changes[-1][1] if changes else None,
        "settle_s": changes[-1][0] if changes else None,
        "size_changes": changes,
        "timeline": [second(rec, frames, i) for i in range(full)],
        "variants": rec.variants,
        "texts": rec.texts,
    }


# -- reading -------------------------------------------------------------------------------
class Stop(Exception):
    """Raised inside the reading loop by SIGTERM or SIGINT."""


def _frame(jpeg_message: bytes, nbytes: int, recv: float, fallback_t: float | None) -> Received | None:
    info = frame_info(jpeg_message)
    if info is not None:
        jpeg, seq, t = info
    elif fallback_t is not None:
        jpeg, seq, t = jpeg_message, round(fallback_t * 1e6), fallback_t
    else:
        return None
    size = jpeg_size(jpeg) or (0, 0)
    return Received(seq, t, recv, nbytes, size[0], size[1])


def read_ws(rec: Recording, seconds: float, hello: bool, on_tick: Callable[[], None]) -> None:
    """Read a WebSocket for ``seconds`` from the connection (or until :class:`Stop`), into
    ``rec``; ``rec.end`` is when reading stopped (before the closing handshake)."""
    with connect(rec.url, open_timeout=10, close_timeout=2, max_size=None, compression=None) as ws:
        rec.start = time.time()
        deadline = time.monotonic() + seconds
        try:
            _read_ws(ws, rec, deadline, hello, on_tick)
        finally:
            rec.end = time.time()


def _read_ws(ws: Any, rec: Recording, deadline: float, hello: bool, on_tick: Callable[[], None]) -> None:
    if hello:
        ws.send("{}")
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = ws.recv(timeout=min(remaining, 0.25))
        except TimeoutError:
            on_tick()
            continue
        except ConnectionClosed as exc:
            rec.error = f"closed by the server: {exc}"
            return
        recv = time.time()
        if isinstance(message, bytes):
            frame = _frame(message, len(message), recv, None)
            if frame is not None:
                rec.frames.append(frame)
        else:
            rec.texts += 1
            try:
                body = json.loads(message)
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("type") == "variant":
                rec.variants.append({"s": round(recv - rec.start, 3), **body})
        on_tick()


def _parts(sock: socket.socket, deadline: float, on_tick: Callable[[], None]) -> Iterator[tuple]:
    """(headers, body, recv) of each MJPEG part read from ``sock`` until ``deadline``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    response = parse_head(head)
    if response.status != 200:
        raise ConnectionError(f"HTTP {response.status}")
    boundary = response.headers.get("content-type", "").partition("boundary=")[2].strip('"') or "frame"
    parser = PartParser(boundary.encode())
    pending = parser.feed(rest)
    while True:
        for part in pending:
            yield part.headers, part.body, part.received_at
        if time.monotonic() >= deadline:
            return
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            on_tick()
            pending = []
            continue
        if not chunk:
            raise ConnectionError("closed by the server")
        pending = parser.feed(chunk)
        on_tick()


def read_mjpeg(rec: Recording, seconds: float, on_tick: Callable[[], None]) -> None:
    """Read an MJPEG stream for ``seconds`` from the connection (or until :class:`Stop`),
    into ``rec``; ``rec.end`` is when reading stopped."""
    parts = urllib.parse.urlsplit(rec.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as sock:
        sock.settimeout(0.25)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        rec.start = time.time()
        deadline = time.monotonic() + seconds
        try:
            for headers, body, recv in _parts(sock, deadline, on_tick):
                stamp = headers.get("x-timestamp")
                frame = _frame(body, len(body), recv, float(stamp) if stamp else None)
                if frame is not None:
                    rec.frames.append(frame)
        except ConnectionError as exc:
            rec.error = str(exc)
        finally:
            rec.end = time.time()


class Progress:
    """Appends one JSON line per completed second to ``out`` (if any): :func:`second`'s
    figures and the newest variant message.  Called from the reading loop only."""

    def __init__(self, rec: Recording, out: TextIO | None) -> None:
        self.rec = rec
        self.out = out
        self.done = 0

    def __call__(self) -> None:
        rec = self.rec
        if self.out is None or not rec.start:
            return
        while time.time() >= rec.start + self.done + 1:
            recent = [f for f in rec.frames[-200:] if f.recv >= rec.start + self.done]
            line = second(rec, recent, self.done)
            line["variant"] = rec.variants[-1] if rec.variants else None
            line["total_frames"] = len(rec.frames)
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()
            self.done += 1


def record(url: str, seconds: float, hello: bool = False, progress: TextIO | None = None) -> Recording:
    """Read ``url`` (``ws://`` or ``http://``) for ``seconds`` from the connection (blocks);
    ends early, keeping what it has, on :class:`Stop` or a closed connection.  A failure
    to connect or read is in ``error``, never raised."""
    rec = Recording(url)
    tick = Progress(rec, progress)
    try:
        if url.startswith(("ws://", "wss://")):
            read_ws(rec, seconds, hello, tick)
        else:
            read_mjpeg(rec, seconds, tick)
    except Stop:
        pass
    except (OSError, ValueError, WebSocketException) as exc:  # refused, reset, a refused handshake
        rec.error = f"{type(exc).__name__}: {exc}"
    if not rec.start:
        rec.start = time.time()
    if not rec.end:
        rec.end = time.time()
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://HOST:PORT/ws[?...] or http://HOST:PORT/stream.mjpg[?...]")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to read (default 20)")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds left out of the figures")
    parser.add_argument("--hello", action="store_true", help="send {} first (WebSocket): text replies")
    parser.add_argument("--progress", metavar="FILE", help="append one JSON line per second")
    parser.add_argument("--frames", metavar="FILE", help="write every frame record at the end")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    out = open(args.progress, "a") if args.progress else None  # noqa: SIM115 (closed below)
    try:
        rec = record(args.url, args.seconds, args.hello, out)
    finally:
        if out is not None:
            out.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if args.frames:
        Path(args.frames).write_text("".join(json.dumps(asdict(f)) + "\n" for f in rec.frames))
    sys.stdout.write(json.dumps(summarise(rec, args.warmup)) + "\n")
    return 0 if rec.frames else 1


if __name__ == "__main__":
    sys.exit(main())
