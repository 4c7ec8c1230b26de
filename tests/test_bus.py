"""An origin and an edge through a real nats-server (bus.py, cameras/nats.py,
outputs/publisher.py): the edge's viewers get the origin's frames unchanged and
in order, the origin's camera runs only while an edge (or a local viewer) wants
it, and a restarted nats-server heals by itself; bad bus URLs are one line and
exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.websocket
from tornado.httpclient import HTTPRequest

from bus import parse_bus_url
from handlers.ws import frame_info
from harness.natsserver import NATS_SERVER, NatsServer
from tests.conftest import assert_one_line_error, run_cli, run_private


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    assert Path(NATS_SERVER).exists(), "nats-server is not installed (scripts/test.sh installs it)"
    server = NatsServer(tmp_path).start()
    yield server
    server.stop()


def status(proc) -> dict:
    with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
        return json.load(response)


def metric(proc, name: str) -> float:
    """The value of one sample (``name{labels}``) of a server's /metrics."""
    with urllib.request.urlopen(proc.url + "metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def wait_for(predicate, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)  # polling with a deadline


async def collect(port: int, count: int) -> list[tuple[bytes, int, float]]:
    """``count`` frames of a WebSocket viewer: (the JPEG, seq, capture time)."""
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws?adapt=0", request_timeout=5)
    ws = await asyncio.wait_for(tornado.websocket.websocket_connect(request), 5)
    frames = []
    try:
        while len(frames) < count:
            message = await asyncio.wait_for(ws.read_message(), 10)
            assert message is not None, "the socket closed"
            if isinstance(message, bytes):
                frames.append(frame_info(message))
    finally:
        ws.close()
    return frames


# -- URLs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "camera", "server", "name"),
    [
        ("nats://127.0.0.1:4222", False, "nats://127.0.0.1:4222", ""),
        ("nats://bus.example", False, "nats://bus.example:4222", ""),
        ("tls://user:secret@bus.example:4443", False, "tls://user:secret@bus.example:4443", ""),
        ("nats://127.0.0.1:4222/garage", True, "nats://127.0.0.1:4222", "garage"),
    ],
)
def test_bus_urls(text, camera, server, name):
    url = parse_bus_url(text, camera=camera)
    assert (url.server, url.camera) == (server, name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--publish", "http://127.0.0.1:4222"], "is not a NATS URL"),
        (["--publish", "nats://127.0.0.1:4222/garage"], "--publish takes a server"),
        (["--publish", "nats://127.0.0.1:99999"], "is not a NATS URL"),
        (["--camera", "lobby=nats:nats://127.0.0.1:4222"], "names no camera"),
        (["--camera", "lobby=nats:ftp://x/garage"], "is not a NATS URL"),
        (["--bus-prefix", "a b"], "--bus-prefix"),
    ],
)
def test_a_bad_bus_url_is_one_line_and_status_2(args, message):
    assert_one_line_error(run_cli(*args, "--port", "0"), message)


# -- an origin and an edge ---------------------------------------------------------------
@pytest.mark.slow
def test_an_edge_serves_the_origins_frames_unchanged_and_in_order(start_server, nats):
    origin = start_server("--publish", nats.url, "--idle-timeout", "1")
    edge = start_server("--camera", "lobby=nats:" + nats.url + "/emulated", "--idle-timeout", "1")

    async def both() -> tuple[list, list]:
        edge_frames = asyncio.ensure_future(collect(edge.port, 40))
        origin_frames = asyncio.ensure_future(collect(origin.port, 60))
        return await edge_frames, await origin_frames

    at_edge, at_origin = run_private(both())
    by_time = {t: jpeg for jpeg, _, t in at_origin}
    matched = [(jpeg, t) for jpeg, _, t in at_edge if t in by_time]
    assert len(matched) >= 20, "the edge and the origin showed too few of the same frames"
    assert all(jpeg == by_time[t] for jpeg, t in matched), "the edge re-encoded a frame"
    seqs = [seq for _, seq, _ in at_edge]
    times = [t for _, _, t in at_edge]
    assert seqs == sorted(set(seqs)) and times == sorted(set(times)), "out of order or duplicated"
    body = status(origin)["publishing"]
    assert body["connected"] and body["frames_published"] > 0
    assert list(body["edges"]) and body["edges"][next(iter(body["edges"]))] >= 0
    at = status(edge)
    assert at["driver"] == "nats" and at["bus"]["frames_received"] >= 40 and at["bus"]["connected"]
    # /metrics on both sides, under the names of /status.
    published = metric(origin, 'camstream_frames_published_total{camera="emulated"}')
    assert published >= body["frames_published"]
    assert metric(edge, 'camstream_frames_received_total{camera="lobby"}') >= 40
    assert metric(edge, 'camstream_bus_reconnects_total{camera="lobby"}') == 0


@pytest.mark.slow
def test_the_origins_camera_runs_while_an_edge_wants_it(start_server, nats):
    origin = start_server("--publish", nats.url, "--idle-timeout", "1")
    edge = start_server("--camera", "lobby=nats:" + nats.url + "/emulated", "--idle-timeout", "1")
    assert not status(origin)["running"], "the origin's camera runs with nobody watching"
    viewer = urllib.request.urlopen(edge.url + "stream.mjpg", timeout=10)
    try:
        viewer.read(20000)
        wait_for(lambda: status(origin)["running"], "the origin's camera never started for the edge")
        wait_for(lambda: status(origin)["publishing"]["edge_viewers"] == 1, "the edge's viewer not counted")
        assert viewer.read(20000)
    finally:
        viewer.close()
    # The edge's camera idles out, it stops saying it is wanted, and the origin's camera stops.
    wait_for(lambda: not status(edge)["running"], "the edge's camera did not stop")
    wait_for(lambda: not status(origin)["running"], "the origin's camera kept running for nobody")
    assert status(origin)["publishing"]["edges"] == {}


def watched_edge(start_server, nats: NatsServer) -> tuple[Any, Any, Any]:
    """An origin, an edge of its camera, and an MJPEG viewer of the edge (to be
    closed by the caller) once the edge has the origin's frames."""
    origin = start_server("--publish", nats.url)
    edge = start_server("--camera", "lobby=nats:" + nats.url + "/emulated")
    viewer = urllib.request.urlopen(edge.url + "stream.mjpg", timeout=10)
    try:
        viewer.read(20000)
        wait_for(lambda: status(edge)["online"], "the edge never got frames")
    except BaseException:
        viewer.close()
        raise
    return origin, edge, viewer


@pytest.mark.slow
def test_a_restarted_nats_server_heals_by_itself(start_server, nats):
    origin, edge, viewer = watched_edge(start_server, nats)
    try:
        port = nats.port
        nats.stop()
        # Meanwhile: "no signal" at the edge (its viewer's stream goes on).
        wait_for(lambda: not status(edge)["online"], "the edge did not notice the bus was gone")
        assert viewer.read(5000)
        nats.start(port)
        wait_for(lambda: status(edge)["online"], "the edge did not come back by itself", timeout_s=20)
        wait_for(lambda: status(origin)["publishing"]["connected"], "the origin did not reconnect")
        assert status(origin)["publishing"]["bus_reconnects"] >= 1
        assert viewer.read(20000)
    finally:
        viewer.close()


@pytest.mark.slow
def test_an_edge_stopped_for_2_s_resumes_with_the_newest_frame_not_a_backlog(start_server, nats):
    origin, edge, viewer = watched_edge(start_server, nats)
    try:
        edge.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(2.0)  # the edge stopped for 2 s: the condition under test, not a synchronisation
        finally:
            edge.proc.send_signal(signal.SIGCONT)
        resumed = time.time()

        def fresh() -> bool:
            with urllib.request.urlopen(edge.url + "snapshot.jpg", timeout=5) as response:
                return float(response.headers["X-Timestamp"]) >= resumed - 0.2

        # The newest frame within a second, not the 2 s of frames in between one by one.
        wait_for(fresh, "the edge still served old frames a second after it resumed", timeout_s=1.0)
        assert status(origin)["publishing"]["connected"]
    finally:
        viewer.close()


# -- credentials and TLS -----------------------------------------------------------------
def edge_status(proc) -> dict:
    """An edge's /status once its camera has had a viewer for a moment (a snapshot starts it)."""
    with contextlib.suppress(urllib.error.HTTPError):  # 503: no frame (the point, for a refused edge)
        urllib.request.urlopen(proc.url + "snapshot.jpg", timeout=10).close()
    return status(proc)


@pytest.mark.slow
def test_credentials_from_a_file_and_from_the_environment(start_server, tmp_path):
    nats = NatsServer(tmp_path, "--user", "camstream", "--pass", "s3cret-pw").start()
    try:
        secret = tmp_path / "bus-auth"
        secret.write_text("camstream:s3cret-pw\n")
        origin = start_server("--publish", nats.url, "--bus-auth-file", str(secret))
        edge = start_server(
            "--camera",
            "lobby=nats:" + nats.url + "/emulated",
            env={"CAMSTREAM_BUS_AUTH": "camstream:s3cret-pw"},
        )
        refused = start_server(
            "--camera", "lobby=nats:" + nats.url + "/emulated", "--bus-auth", "camstream:no"
        )
        # The password in a URL is the URL's: it wins, and /status does not show it.
        in_url = start_server(
            "--camera", f"lobby=nats:nats://camstream:s3cret-pw@127.0.0.1:{nats.port}/emulated"
        )
        for proc in (edge, in_url):
            with urllib.request.urlopen(proc.url + "snapshot.jpg", timeout=15) as response:
                assert response.status == 200
            assert status(proc)["bus"]["connected"] and status(proc)["online"]
        assert status(origin)["publishing"]["connected"]
        assert status(in_url)["bus"]["server"] == f"nats://camstream:***@127.0.0.1:{nats.port}"
        assert "s3cret" not in json.dumps(status(in_url)) + in_url.log_text()
        body = edge_status(refused)
        assert not body["online"] and not body["bus"]["connected"]
        assert "authorization" in body["bus"]["error"].lower(), body["bus"]["error"]
        assert "authorization" in (body["error"] or "").lower()
    finally:
        nats.stop()


@pytest.mark.slow
def test_tls_urls_verify_the_bus_server(start_server, tmp_path):
    from tests.test_limits import self_signed

    certfile, keyfile = self_signed(tmp_path)
    nats = NatsServer(tmp_path, "--tls", "--tlscert", str(certfile), "--tlskey", str(keyfile)).start()
    try:
        url = f"tls://127.0.0.1:{nats.port}"
        trust = {"SSL_CERT_FILE": str(certfile)}  # the machine's CAs, and this one
        origin = start_server("--publish", url, env=trust)
        edge = start_server("--camera", f"lobby=nats:{url}/emulated", env=trust)
        with urllib.request.urlopen(edge.url + "snapshot.jpg", timeout=15) as response:
            assert response.status == 200
        assert status(origin)["publishing"]["connected"] and status(edge)["bus"]["connected"]
        # Without the CA the server's certificate is not trusted: no frames, and the edge says why.
        untrusting = start_server("--camera", f"lobby=nats:{url}/emulated")
        body = edge_status(untrusting)
        assert not body["online"] and "certificate" in body["bus"]["error"].lower(), body["bus"]["error"]
    finally:
        nats.stop()


@pytest.mark.slow
def test_an_edges_own_access_options_guard_it(start_server, nats):
    start_server("--publish", nats.url)
    token = "edge-token-0123"
    edge = start_server("--camera", "lobby=nats:" + nats.url + "/emulated", "--token", token)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(edge.url + "snapshot.jpg", timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    with urllib.request.urlopen(f"{edge.url}snapshot.jpg?token={token}", timeout=15) as response:
        assert response.status == 200 and response.read(2) == b"\xff\xd8"


@pytest.mark.slow
def test_a_frame_beyond_the_buses_max_payload_is_counted_and_said_once(start_server, tmp_path):
    conf = tmp_path / "nats.conf"
    conf.write_text("max_payload: 8000\n")  # a 640x480 frame is about 25 KB
    nats = NatsServer(tmp_path, "-c", str(conf)).start()
    try:
        origin = start_server("--publish", nats.url)
        viewer = urllib.request.urlopen(origin.url + "stream.mjpg", timeout=10)
        try:
            viewer.read(20000)
            wait_for(lambda: status(origin)["publishing"]["frames_not_published"] >= 30, "no frame refused")
            assert viewer.read(20000), "the origin's own viewer lost its stream"
        finally:
            viewer.close()
        body = status(origin)["publishing"]
        assert body["frames_published"] == 0 and body["connected"]
        warnings = [line for line in origin.log_text().splitlines() if "max_payload" in line]
        assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
    finally:
        nats.stop()
