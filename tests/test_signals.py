"""A second SIGINT or SIGTERM ends the server at once, whatever its main thread was doing.

The first signal starts the orderly shutdown on the IOLoop; a second one runs a
plain signal handler between two bytecodes of the main thread, which may be in
the middle of a log call, holding the log queue's lock (GNU ``timeout`` sends
SIGTERM to the process and then to its group, so two come close together).  A
handler that logged there waited for that lock forever: the process hung, kept
its port and ignored every later signal.  These tests put the second signal
exactly there, and where standard error is a pipe nobody reads.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.process import ROOT, free_port, stop_process
from server import HARD_EXIT_NOTE
from tests.camera_polling import wait_for
from tests.mjpeg_client import StreamReader
from tests.sources import FAKE_PICAMERA2

#: How long a second signal may take to end the process (it should be at once).
EXIT_DEADLINE_S = 5.0

#: ``python -c`` this, then server.py's options: the server, whose log queue sends the
#: process its second SIGTERM from inside the queue's lock, as the main thread puts
#: the "shutting down" record in it.  ``os.kill`` to this very process runs the Python
#: signal handler before it returns (CPython checks for signals right after the
#: call), so the handler runs with the lock held, every time: no race.
SIGNAL_UNDER_THE_LOG_LOCK = """
import os, queue, signal, sys
from unittest import mock

import server

Queue = queue.Queue


class SignallingQueue(Queue):
    def _put(self, item):
        super()._put(item)
        if item is not None and item.getMessage() == "shutting down" and self.mutex.locked():
            os.write(2, b"second SIGTERM sent under the log queue's lock\\n")
            os.kill(os.getpid(), signal.SIGTERM)
            os.write(2, b"the signal handler returned\\n")


real_start_logging = server.start_logging


def start_logging(level, stream=None):
    with mock.patch.object(queue, "Queue", SignallingQueue):
        return real_start_logging(level, stream)


server.start_logging = start_logging
server.main(sys.argv[1:])
"""


def test_a_second_signal_while_the_log_queues_lock_is_held_ends_the_process(tmp_path: Path):
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SIGNAL_UNDER_THE_LOG_LOCK, "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "serving the" in log_path.read_text(), timeout_s=20, what="its start", poll_s=0.05)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            status = proc.wait(EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second signal did not end the process:\n{log_path.read_text()}")
        took = time.monotonic() - started
    finally:
        stop_process(proc, timeout_s=2)
    log = log_path.read_text()
    assert "second SIGTERM sent under the log queue's lock" in log, log  # the case we meant to make
    assert "the signal handler returned" not in log, log
    assert status == 1, log
    assert HARD_EXIT_NOTE.decode() in log, log
    assert "Traceback" not in log, log
    assert took < EXIT_DEADLINE_S


def _full_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) whose buffer is full; nobody will read it."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest: quick to fill
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)  # as a real pipe is: the server's writes block
    return read_end, write_end


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2):
            return True
    except OSError:
        return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.slow
def test_a_second_signal_ends_the_process_when_standard_error_is_a_full_pipe():
    """A log sink that stopped reading (a full pipe): the note of the second signal
    would block in ``write`` for ever; it is left out, and the process ends."""
    read_end, write_end = _full_pipe()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(FAKE_PICAMERA2),
        "FAKE_PICAMERA2_STOP_DELAY_S": "30",  # the shutdown waits for a camera that will not let go
    }
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "server.py",
                *("--host", "127.0.0.1", "--port", str(port), "--camera", "picamera2"),
            ],
            cwd=ROOT,
            stdout=write_end,
            stderr=write_end,
            env=env,
        )
    finally:
        os.close(write_end)
    reader = None
    try:
        wait_for(lambda: _answers(port), timeout_s=20, what="the server answering", poll_s=0.05)
        reader = StreamReader(port, "/stream.mjpg")
        reader.wait_for(2, timeout_s=10)  # the camera runs: the shutdown will wait for it
        proc.send_signal(signal.SIGTERM)
        # The listening socket closes once the shutdown has begun; the camera holds it there.
        wait_for(lambda: _refused(port), timeout_s=10, what="the shutdown under way", poll_s=0.02)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the second signal did not end the process (blocked writing to a full pipe?)")
        assert status == 1
        assert time.monotonic() - started < EXIT_DEADLINE_S
    finally:
        if reader is not None:
            reader.close()
        stop_process(proc, timeout_s=2)
        os.close(read_end)
