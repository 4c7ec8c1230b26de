"""A real server process end to end: cameras it cannot build, a port in use, idling, signals.

Parsing the command line: tests/test_settings.py."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import server
from tests.conftest import ROOT, assert_one_line_error, run_cli


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--camera", "files"], "needs --source"),
        # The message names where the source was given, not always --source.
        (["--camera", "files", "--source", "/nonexistent"], "error: --source /nonexistent: not a folder"),
        (
            ["--camera", "files:/nonexistent"],
            "error: --camera files:/nonexistent: source /nonexistent: not a folder",
        ),
        (["--source", "x"], "takes no --source"),
    ],
)
def test_a_camera_that_cannot_be_built_exits_2_with_one_line(args, message):
    # The settings parse; the driver refuses its source when the server builds it.
    assert_one_line_error(run_cli(*args), message)


@pytest.mark.slow
def test_a_folder_without_jpegs(tmp_path):
    (tmp_path / "notes.txt").write_text("no pictures here")
    result = run_cli("--camera", "files", "--source", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"server.py: error: --source {tmp_path}: no .jpg or .jpeg files in this folder"
    )


@pytest.mark.slow
def test_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def status(proc) -> dict:
    code, _headers, body = proc.get("/status")
    assert code == 200
    return json.loads(body)


@pytest.mark.slow
def test_server_process_idles_the_camera_and_exits_cleanly(start_server, frames_dir):
    proc = start_server("--camera", "files", "--source", str(frames_dir), "--idle-timeout", "0.5")
    assert status(proc)["running"] is False
    code, _headers, body = proc.get("/snapshot.jpg")
    assert code == 200 and body.startswith(b"\xff\xd8")
    assert status(proc)["running"] is True
    deadline = time.monotonic() + 10
    while status(proc)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)  # polling with a deadline
    assert status(proc)["running"] is False
    assert "stopping the camera" in proc.log_text()
    assert proc.stop() == 0
    log = proc.log_text()
    assert "shutting down" in log


@pytest.mark.slow
def test_camera_environment_variable_selects_the_driver(start_server, frames_dir):
    proc = start_server("--source", str(frames_dir), env={"CAMERA": "files"})
    assert status(proc)["driver"] == "files"


@pytest.mark.slow
def test_sigterm_closes_every_viewer_and_exits_0_within_seconds(start_server, frames_dir):
    import signal
    import socket

    from tests.mjpeg_client import StreamReader

    proc = start_server("--camera", "files", "--source", str(frames_dir))
    mjpeg = StreamReader(proc.port, "/stream.mjpg")
    ws = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    ws.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    mjpeg.wait_for(2, timeout_s=10)
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(5) == 0
    took = time.monotonic() - started
    assert took < 3, took
    # The WebSocket got a close frame (1001, going away) before the connection ended.
    data = b""
    while chunk := ws.recv(65536):
        data += chunk
    ws.close()
    assert b"\x88" in data and b"\x03\xe9" in data  # opcode 8, code 1001
    mjpeg.close()
    log = proc.log_text()
    assert "shutting down" in log and "camera stopped" in log


@pytest.mark.slow
def test_a_second_signal_exits_at_once_when_the_shutdown_hangs(start_server):
    import signal

    from tests.mjpeg_client import StreamReader

    # The fake picamera2 can be told to hang when released, as a wedged camera does:
    # the first signal's shutdown then waits for it; the second must not.
    proc = start_server(
        "--camera",
        "picamera2",
        env={
            "PYTHONPATH": str(ROOT / "tests" / "fake_picamera2"),
            "FAKE_PICAMERA2_STOP_DELAY_S": "30",
        },
    )
    reader = StreamReader(proc.port, "/stream.mjpg")
    reader.wait_for(2, timeout_s=10)  # the camera is running
    proc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "shutting down" not in proc.log_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the log with a deadline
    assert proc.proc.poll() is None  # still busy releasing the camera
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(10) == 1
    assert time.monotonic() - started < 2
    reader.close()


def _global_addresses(family: str) -> set[str]:
    """This machine's global addresses of ``family`` ("inet", "inet6") as ``ip`` lists them."""
    out = subprocess.run(
        ["ip", "-o", "-f", family, "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@pytest.mark.slow
@pytest.mark.alone  # the machine's addresses: test_adapt_link's links come and go
def test_listening_on_every_interface_prints_the_addresses_people_can_open(tmp_path):
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "server.py"),
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--token",
                "0123456789",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin"},
        )
    try:
        deadline = time.monotonic() + 20
        text = ""
        while "serving" not in text or "also on" not in text:
            assert time.monotonic() < deadline, f"the server printed no addresses:\n{text}"
            assert proc.poll() is None, f"the server exited:\n{text}"
            time.sleep(0.05)  # polling the log with a deadline
            text = log_path.read_text()
        urls = re.findall(r"https?://[^\s,()]+?:\d+/(?=[\s,)]|$)", text, flags=re.M)
        assert urls, text
        assert not [url for url in urls if "0.0.0.0" in url], text
        hosts = {re.match(r"http://(.+):\d+/", url).group(1) for url in urls}
        assert "localhost" in hosts
        if shutil.which("ip"):
            assert hosts - {"localhost"} == _global_addresses("inet"), text
        port = int(re.search(r"localhost:(\d+)/", text).group(1))
        with urllib.request.urlopen(f"http://localhost:{port}/status?token=0123456789", timeout=10) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in log_path.read_text()


def test_a_wildcard_socket_is_shown_as_each_address_and_localhost():
    with socket.socket(socket.AF_INET) as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("0.0.0.0", 0))
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::", v4.getsockname()[1]))
        port = v4.getsockname()[1]
        both = server.server_urls([v6, v4], "https", "/cam", ["192.0.2.7", "2001:db8::7"])
        only_v4 = server.server_urls([v4], "http", "", ["192.0.2.7", "2001:db8::7"])
    assert both == [
        f"https://192.0.2.7:{port}/cam/",
        f"https://[2001:db8::7]:{port}/cam/",
        f"https://localhost:{port}/cam/",
    ]
    assert only_v4 == [f"http://192.0.2.7:{port}/", f"http://localhost:{port}/"]
    with socket.socket() as loopback:
        loopback.bind(("127.0.0.1", 0))
        assert server.server_urls([loopback], "http", "", ["192.0.2.7"]) == [
            f"http://127.0.0.1:{loopback.getsockname()[1]}/"
        ]


def test_the_machine_addresses_leave_out_loopback_and_link_local():
    addresses = server.local_addresses()
    assert not [a for a in addresses if a.startswith("127.") or a == "::1" or a.lower().startswith("fe80")]
    if shutil.which("ip"):
        assert set(addresses) == _global_addresses("inet") | _global_addresses("inet6")
