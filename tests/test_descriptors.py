"""Out of file descriptors: the server pauses accepting, refuses cleanly, and its viewers keep watching.

A real limit on the real process (``prlimit`` on the server's PID, 256
descriptors) and a real flood: a client process opens 1000 connections and
holds them (sending nothing, as a port scan or a stuck proxy would), so the
server runs out of descriptors.  Tornado's accept handler alone retried the
failing ``accept()`` at once, for ever: a core spun, and a traceback was logged
each time.  Now the listening socket pauses (listening.py), the connections it
cannot take are answered 503 and closed, a viewer already watching keeps its
frame rate, and new viewers are served once the flood is over.

The flood client is this module run as a program::

    python -m tests.test_descriptors PORT COUNT MAX_SECONDS

It prints ``flooding`` once every connection is started, holds them until
SIGTERM (or ``MAX_SECONDS``), then prints one JSON object (how many connections
ended in which state) and exits.
"""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from harness.process import ROOT, ServerProcess, stop_process
from listening import REFUSAL
from tests.camera_polling import wait_for
from tests.mjpeg_client import StreamReader

log = logging.getLogger(__name__)

#: The server's descriptor limit, and the connections that run it out.
LIMIT = 256
FLOOD = 1000
#: Frames the viewer already watching is timed over, during the flood (about 5 s at 30 fps).
MEASURED_FRAMES = 150


# -- the flood client -----------------------------------------------------------------
def flood(port: int, count: int, max_s: float) -> dict[str, int]:
    """Open ``count`` connections to ``127.0.0.1:port`` at once and hold them, sending
    nothing, until SIGTERM or ``max_s``; how many ended in each state:
    ``open`` (connected, nothing heard: accepted and held, or waiting in the
    server's queue), ``refused`` (a whole 503 answer, then closed), ``closed``
    (closed without a word), ``reset``, ``garbled`` (anything else heard),
    ``failed`` (the connect failed) and ``connecting`` (still trying)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, str] = {}
    heard: dict[socket.socket, bytes] = {}
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        state[sock] = "connecting"
        heard[sock] = b""
        selector.register(sock, selectors.EVENT_WRITE)
    sys.stdout.write("flooding\n")
    sys.stdout.flush()
    deadline = time.monotonic() + max_s
    while not stop and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if state[sock] == "connecting":
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    state[sock] = "failed"
                    selector.unregister(sock)
                else:
                    state[sock] = "open"
                    selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                state[sock] = "reset"
                selector.unregister(sock)
                continue
            if data:
                heard[sock] += data
                continue
            selector.unregister(sock)
            reply = heard[sock]
            state[sock] = "refused" if reply == REFUSAL else "closed" if not reply else "garbled"
    counts = {name: 0 for name in ("open", "refused", "closed", "reset", "garbled", "failed", "connecting")}
    for sock, name in state.items():
        if name == "open" and heard[sock]:
            name = "garbled"  # heard something, not closed
        counts[name] += 1
        sock.close()
    return counts


# -- the test -------------------------------------------------------------------------
def cpu_ticks(pid: int) -> int:
    """User and system time of every thread of ``pid`` so far, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def runnable_s(pid: int) -> float:
    """Seconds the main thread of ``pid`` (the IOLoop's) has been on a CPU or waiting
    in a run queue for one (/proc/PID/task/PID/schedstat): on a busy machine a
    spinning loop gets little CPU, but it is runnable all the time."""
    on_cpu_ns, waiting_ns, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return (int(on_cpu_ns) + int(waiting_ns)) / 1e9


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.alone  # a frame rate and a CPU share
def test_out_of_descriptors_the_server_pauses_refuses_cleanly_and_keeps_its_viewer(
    start_server, frames_dir: Path, tmp_path: Path
):
    server = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    pid = server.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))  # prlimit(1)'s system call
    viewer = StreamReader(server.port, "/stream.mjpg")
    try:
        counts = flooded(server, viewer, tmp_path / "flood.out")
        log.info("the flood's connections: %s", counts)
        assert sum(counts.values()) == FLOOD
        # Each one accepted and held, or waiting, or told 503 and closed: nothing broken.
        assert counts["refused"] > 0 and counts["open"] > 0, counts
        assert counts["reset"] == counts["garbled"] == counts["closed"] == counts["failed"] == 0, counts
        # The viewer watched throughout; once the flood is over, a new one is served.
        assert viewer.error is None and viewer.thread.is_alive()
    finally:
        viewer.close()
    wait_for(lambda: open_descriptors(pid) < LIMIT // 2, timeout_s=20, what="the flood's descriptors closed")
    again = StreamReader(server.port, "/stream.mjpg")
    try:
        part = again.wait_for(1, timeout_s=10)[0]
    finally:
        again.close()
    Image.open(io.BytesIO(part.body)).load()
    # /status and /metrics count the pauses and the refusals, and say it accepts again.
    code, _, body = server.get("/status")
    listening = json.loads(body)["listening"]
    assert code == 200 and listening["accepting"] is True, listening
    assert listening["accept_pauses"] > 0 and listening["connections_refused"] >= counts["refused"], listening
    code, _, body = server.get("/metrics")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples["camstream_accept_pauses_total"] == listening["accept_pauses"], samples
    assert samples["camstream_connections_refused_total"] == listening["connections_refused"], samples
    text = server.log_text()
    assert text.count("out of file descriptors (ulimit -n 256)") == 1, text  # one a minute
    assert "Traceback" not in text and " ERROR " not in text


def flooded(server: ServerProcess, viewer: StreamReader, out_path: Path) -> dict[str, int]:
    """The flood against ``server`` while ``viewer`` watches: the viewer's frame rate and
    the server's CPU measured over it (asserted), then the flood's counts."""
    pid = server.proc.pid
    with open(out_path, "wb") as out:
        client = subprocess.Popen(
            [sys.executable, "-m", "tests.test_descriptors", str(server.port), str(FLOOD), "60"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        viewer.wait_for(10, timeout_s=10)
        wait_for(lambda: b"flooding" in out_path.read_bytes(), timeout_s=20, what="the flood", poll_s=0.01)
        wait_for(
            lambda: open_descriptors(pid) >= LIMIT - 2, timeout_s=10, what="the limit reached", poll_s=0.01
        )
        first = len(viewer.parts)
        ticks0, runnable0, t0 = cpu_ticks(pid), runnable_s(pid), time.monotonic()
        parts = viewer.wait_for(first + MEASURED_FRAMES, timeout_s=30)
        ticks1, runnable1, t1 = cpu_ticks(pid), runnable_s(pid), time.monotonic()
        still_full = open_descriptors(pid)
        cpu_percent = 100 * (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
        runnable_percent = 100 * (runnable1 - runnable0) / (t1 - t0)
        window = parts[first:]
        fps = (len(window) - 1) / (window[-1].arrived - window[0].arrived)
        log.info(
            "over the flood: viewer %.1f fps, server CPU %.1f %% of a core, its IOLoop runnable %.1f %%",
            *(fps, cpu_percent, runnable_percent),
        )
        assert still_full >= LIMIT - 2, "the flood ended before the measurement did"
        assert cpu_percent < 60, f"the accept loop spins: {cpu_percent:.0f} % of a core"
        assert runnable_percent < 60, f"the accept loop spins: runnable {runnable_percent:.0f} % of the time"
        assert fps >= 29, fps
        client.send_signal(signal.SIGTERM)
        assert client.wait(30) == 0, out_path.read_text()
    finally:
        stop_process(client, timeout_s=5)
    return json.loads(out_path.read_text().splitlines()[-1])


if __name__ == "__main__":
    port, count, max_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    sys.stdout.write(json.dumps(flood(port, count, max_s)) + "\n")
