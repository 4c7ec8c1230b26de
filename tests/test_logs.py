"""logs.py: a log sink that stops reading never blocks the IOLoop."""

from __future__ import annotations

import http.client
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.process import free_port
from logs import QUEUE_RECORDS, DroppingQueueHandler, LogWriter
from tests.camera_polling import wait_for
from tests.conftest import ROOT
from tests.mjpeg_client import StreamReader


class StuckSink(logging.Handler):
    """A sink that takes nothing until the test lets go."""

    def __init__(self) -> None:
        super().__init__()
        self.let_go = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.let_go.wait(30)
        self.lines.append(record.getMessage())


@pytest.fixture
def stuck() -> Iterator[tuple[logging.Logger, DroppingQueueHandler, StuckSink, LogWriter]]:
    import queue

    sink = StuckSink()
    handler = DroppingQueueHandler(queue.Queue(QUEUE_RECORDS))
    logger = logging.getLogger("tests.stuck")
    logger.propagate = False
    logger.addHandler(handler)
    writer = LogWriter(handler, sink)
    writer.start()
    yield logger, handler, sink, writer
    sink.let_go.set()
    writer.stop()
    logger.removeHandler(handler)
    logger.propagate = True


def test_logging_to_a_stuck_sink_returns_at_once_and_counts_what_it_drops(stuck):
    logger, handler, sink, writer = stuck
    count = QUEUE_RECORDS + 5000
    started = time.monotonic()
    for i in range(count):
        logger.warning("line %d", i)
    spent_s = time.monotonic() - started
    assert spent_s < 5  # microseconds a line, whatever the sink does (a coarse bound)
    assert handler.dropped >= 4999  # the queue is bounded: memory too
    sink.let_go.set()
    wait_for(lambda: any("log lines dropped" in line for line in sink.lines), what="the drop note")
    writer.stop()
    assert sink.lines[0] == "line 0"


@pytest.mark.slow
@pytest.mark.alone  # no frame later than 0.5 s
def test_a_server_whose_log_nobody_reads_keeps_streaming(frames_dir: Path):
    """Standard error is a pipe nobody reads (a stalled terminal, a journal that
    lags): once its 64 KB are full, writing a log line would block.  Viewers and
    requests must not notice."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMSTREAM_", "CAMERA"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "server.py"),
            *("--port", str(port), "--log-level", "debug"),
            *("--camera", f"files:{frames_dir}", "--fps", "30"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,  # never read while the test runs
        stderr=subprocess.STDOUT,
        env=env,
    )
    viewer = None
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, timeout_s=20, what="the server listening")
        viewer = StreamReader(port, "/stream.mjpg")
        viewer.wait_for(5, 10)
        # Every request logs a line at DEBUG: 3000 of them are ~300 KB of log.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        started = len(viewer.parts)
        for _ in range(3000):
            conn.request("GET", "/status")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
        parts = viewer.wait_for(started + 30, 10)
        arrivals = [p.arrived for p in parts[started:]]
        worst_gap_s = max(b - a for a, b in itertools.pairwise(arrivals))
        assert worst_gap_s < 0.5, f"the viewer waited {worst_gap_s:.2f} s for a frame"
    finally:
        if viewer is not None:
            viewer.close()
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    text = output.decode(errors="replace")
    assert "Traceback" not in text
    assert text.count("GET /status") >= 3000  # nothing lost: written once the pipe was read again
    assert "shutting down" in text
