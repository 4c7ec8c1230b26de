"""An origin, a real nats-server, two edges and a real nginx in front of them with the
README's configuration (docs/nginx-edges.conf): viewers of both kinds on both edges get
the origin's frames, unchanged, in order, once each; the origin's camera runs while a
viewer of either edge wants it; an edge killed does not disturb the other; a restarted
origin heals by itself; and several edges share one port with ``--reuse-port``."""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from websockets.sync.client import connect

from handlers.ws import frame_info
from harness.multipart import PartParser
from harness.natsserver import NATS_SERVER, NatsServer
from harness.nginx import Nginx, edges_http
from harness.process import ServerProcess

pytestmark = pytest.mark.slow

#: The camera of every process here: small and slow enough for five processes on two cores.
CAMERA = ("--fps", "15", "--width", "320", "--height", "240", "--idle-timeout", "1")


def status(proc: ServerProcess) -> dict:
    with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
        return json.load(response)


def wait_for(predicate, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)  # polling with a deadline


@dataclass
class Seen:
    """One frame as a viewer got it."""

    jpeg: bytes
    #: Capture time (the origin's), as the stream carries it.
    timestamp: float
    #: When it arrived here (monotonic).
    arrived: float


class Reader:
    """A viewer on a thread of its own, keeping every frame it gets."""

    def __init__(self) -> None:
        self.frames: list[Seen] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._guarded, daemon=True)

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # closed, or a framing error: kept for the test to see
            self.error = exc
        with self.changed:
            self.changed.notify_all()

    def _run(self) -> None:
        raise NotImplementedError

    def _add(self, jpeg: bytes, timestamp: float) -> None:
        with self.changed:
            self.frames.append(Seen(jpeg, timestamp, time.monotonic()))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[Seen]:
        """Every frame so far, once there are ``count``; raises TimeoutError."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.frames) >= count or not self.thread.is_alive(), timeout_s)
            if len(self.frames) < count:
                raise TimeoutError(f"{len(self.frames)} of {count} frames in {timeout_s} s ({self.error!r})")
            return list(self.frames)


class WsReader(Reader):
    """A WebSocket viewer (the ``websockets`` client)."""

    def __init__(self, port: int, path: str = "/ws?adapt=0") -> None:
        super().__init__()
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.ws = None
        self.opened = threading.Event()
        self.thread.start()
        assert self.opened.wait(15), f"{self.url} did not open: {self.error!r}"

    def _run(self) -> None:
        try:
            with connect(self.url, open_timeout=10, close_timeout=2, ping_interval=None, max_size=None) as ws:
                self.ws = ws
                self.opened.set()
                for message in ws:
                    info = frame_info(message) if isinstance(message, bytes) else None
                    if info is not None:
                        self._add(info[0], info[2])
        finally:
            self.opened.set()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.thread.join(5)


class MjpegReader(Reader):
    """An MJPEG viewer over HTTP/1.1 (``http.client``, which undoes nginx's chunked
    encoding as a browser does), its parts split by harness/multipart.py."""

    def __init__(self, port: int, path: str = "/stream.mjpg") -> None:
        super().__init__()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path)
        self.sock = self.conn.sock  # the response keeps it when the connection lets go
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.status
        boundary = self.response.getheader("Content-Type", "").partition("boundary=")[2]
        self.parser = PartParser(boundary.encode())
        self._closed = False
        self.thread.start()

    def _run(self) -> None:
        while not self._closed:
            data = self.response.read1(65536)
            if not data:
                return
            for part in self.parser.feed(data):
                self._add(part.body, float(part.headers["x-timestamp"]))

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.response.close()
        self.conn.close()


def key(timestamp: float) -> str:
    """A frame's capture time to the millisecond: unique at 15 fps, and the same
    whether it was read from a part's header or a WebSocket message's comment."""
    return f"{timestamp:.3f}"


def assert_in_order_once(frames: list[Seen], what: str) -> None:
    times = [f.timestamp for f in frames]
    assert times == sorted(times), f"{what}: frames out of order"
    assert len(set(times)) == len(times), f"{what}: a frame came twice"


@dataclass
class Cluster:
    nats: NatsServer
    origin: ServerProcess
    edges: list[ServerProcess]
    nginx: Nginx
    folder: Path

    def edge_of(self, pid: int) -> ServerProcess:
        return next(edge for edge in self.edges if edge.proc and edge.proc.pid == pid)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """nats-server, an origin publishing its camera ``emulated``, two edges serving it
    under the same name, and nginx in front of the edges."""
    assert Path(NATS_SERVER).exists(), "nats-server is not installed (scripts/test.sh installs it)"
    processes: list[ServerProcess] = []
    nats = NatsServer(tmp_path).start()
    nginx = None

    def server(name: str, *args: str) -> ServerProcess:
        (tmp_path / name).mkdir()
        proc = ServerProcess([*args, *CAMERA], tmp_path / name / "server")
        processes.append(proc)
        return proc.start()

    try:
        origin = server("origin", "--camera", "emulated", "--publish", nats.url)
        source = f"emulated=nats:{nats.url}/emulated"
        edges = [server(f"edge{i}", "--camera", source) for i in (1, 2)]
        (tmp_path / "nginx").mkdir()
        ports = [edge.port for edge in edges]
        nginx = Nginx(tmp_path / "nginx", lambda port: edges_http(port, ports), "/status").start()
        yield Cluster(nats, origin, edges, nginx, tmp_path)
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in processes:
            proc.stop()
        nats.stop()
    for proc in processes:
        text = proc.log_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text
    # An edge killed by a test is, for nginx, an upstream that refuses: that and nothing else.
    unexpected = [line for line in nginx.errors() if "(111: Connection refused)" not in line]
    assert unexpected == [], "\n".join(unexpected)


def test_mjpeg_and_websocket_viewers_on_both_edges_get_the_origins_frames(cluster):
    # The origin's own viewer, to compare bytes with.
    reference = WsReader(cluster.origin.port)
    # Through nginx: its least_conn sends each new viewer to the edge with fewer.
    viewers = {
        "ws 1": WsReader(cluster.nginx.port),
        "mjpeg 1": MjpegReader(cluster.nginx.port),
        "ws 2": WsReader(cluster.nginx.port),
        "mjpeg 2": MjpegReader(cluster.nginx.port),
    }
    try:
        seen = {name: viewer.wait_for(30, 20) for name, viewer in viewers.items()}
        # Both edges serve, one viewer of each kind each.
        for edge in cluster.edges:
            kinds = sorted(client["kind"] for client in status(edge)["clients"])
            assert kinds == ["mjpeg", "ws"], (edge.port, kinds)
        origin_frames = {key(f.timestamp): f.jpeg for f in reference.wait_for(1)}
    finally:
        for viewer in viewers.values():
            viewer.close()
        reference.close()
    for name, frames in seen.items():
        assert_in_order_once(frames, name)
        matched = [f for f in frames if key(f.timestamp) in origin_frames]
        assert len(matched) >= 20, f"{name}: too few of the origin's frames ({len(matched)} of {len(frames)})"
        assert all(f.jpeg == origin_frames[key(f.timestamp)] for f in matched), f"{name}: a frame re-encoded"
    published = status(cluster.origin)["publishing"]
    assert len(published["edges"]) == 2 and published["frames_published"] > 0


def test_the_origins_camera_runs_while_a_viewer_of_either_edge_wants_it(cluster):
    one, two = cluster.edges
    assert not status(cluster.origin)["running"], "the origin's camera runs with nobody watching"
    first = MjpegReader(one.port)
    second = None
    try:
        first.wait_for(1)
        wait_for(lambda: status(cluster.origin)["running"], "the origin's camera did not start for an edge")
        second = WsReader(two.port)
        second.wait_for(1)
        wait_for(
            lambda: sorted(status(cluster.origin)["publishing"]["edges"].values()) == [1, 1],
            "the origin does not hear both edges with one viewer each",
        )
        first.close()
        wait_for(lambda: not status(one)["running"], "the first edge's camera did not idle out")
        # Past the time an edge's word holds the camera (3 s): still running, for the second edge.
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            assert status(cluster.origin)["running"], "the origin's camera stopped under the second edge"
            time.sleep(0.25)  # watching the origin for 4 s: the condition under test
        count = len(second.wait_for(1))
        second.wait_for(count + 15)
    finally:
        first.close()
        if second is not None:
            second.close()
    wait_for(lambda: not status(cluster.origin)["running"], "the origin's camera kept running for nobody")
    assert status(cluster.origin)["publishing"]["edges"] == {}


@pytest.mark.alone  # no frame later than 1 s
def test_killing_one_edge_does_not_disturb_the_other(cluster):
    viewers = [MjpegReader(cluster.nginx.port), MjpegReader(cluster.nginx.port)]
    doomed, survivor = cluster.edges
    try:
        for viewer in viewers:
            viewer.wait_for(5)
        assert all(status(edge)["clients"] for edge in cluster.edges), "nginx did not use both edges"
        killed_at = time.monotonic()
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        # nginx ends the killed edge's stream; the other one goes on.
        wait_for(lambda: any(not v.thread.is_alive() for v in viewers), "no viewer saw its edge go")
        [left] = [v for v in viewers if v.thread.is_alive()]
        frames = left.wait_for(len(left.wait_for(1)) + 30, 20)
        around = [f.arrived for f in frames if f.arrived >= killed_at - 1.0]
        gaps = [b - a for a, b in itertools.pairwise(around)]
        assert max(gaps) < 1.0, f"the other edge's viewer stalled {max(gaps):.2f} s"
        assert_in_order_once(frames, "the other edge's viewer")
        # New viewers through nginx all reach the edge that is left.
        for _ in range(4):
            late = MjpegReader(cluster.nginx.port)
            try:
                late.wait_for(3)
            finally:
                late.close()
        assert len(status(survivor)["clients"]) == 1, "the late viewers did not all leave"
        edges = lambda: status(cluster.origin)["publishing"]["edges"]  # noqa: E731
        wait_for(lambda: len(edges()) == 1, "the dead edge is still counted")
        assert status(cluster.origin)["running"]
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_restarted_origin_heals_by_itself(cluster):
    one, two = cluster.edges
    viewers = [MjpegReader(one.port), WsReader(two.port)]
    try:
        for viewer in viewers:
            viewer.wait_for(3)
        wait_for(lambda: all(status(edge)["online"] for edge in cluster.edges), "the edges never got frames")
        cluster.origin.stop()
        # Meanwhile the edges say "no signal" and their viewers' streams go on.
        wait_for(lambda: not any(status(edge)["online"] for edge in cluster.edges), "the edges saw no outage")
        counts = [len(viewer.wait_for(1)) for viewer in viewers]
        for viewer, count in zip(viewers, counts, strict=True):
            viewer.wait_for(count + 1, 5)  # the "no signal" picture, once a second
        cluster.origin.start()
        restarted = time.time()
        wait_for(lambda: all(status(edge)["online"] for edge in cluster.edges), "the edges did not heal", 20)
        for viewer in viewers:
            frames = viewer.wait_for(len(viewer.wait_for(1)) + 10)
            assert frames[-1].timestamp >= restarted, "a viewer did not get the restarted origin's frames"
            # In order throughout; an MJPEG viewer is sent its still picture again
            # once a second (frames_repeated) while no new one comes, so "once" from the restart.
            times = [f.timestamp for f in frames]
            assert times == sorted(times), "a viewer's frames out of order across the restart"
            assert_in_order_once(
                [f for f in frames if f.timestamp >= restarted], "a viewer after the restart"
            )
    finally:
        for viewer in viewers:
            viewer.close()


def test_edges_share_one_port_with_reuse_port(cluster, tmp_path):
    source = f"emulated=nats:{cluster.nats.url}/emulated"
    folders = [tmp_path / "shared1", tmp_path / "shared2", tmp_path / "shared3"]
    for folder in folders:
        folder.mkdir()
    first = ServerProcess(["--camera", source, "--reuse-port", *CAMERA], folders[0] / "server").start()
    second = ServerProcess(["--camera", source, "--reuse-port", *CAMERA], folders[1] / "server")
    second.port = first.port
    try:
        second.start()
        # The kernel spreads new connections over both processes.
        pids = {status(first)["pid"] for _ in range(40)}
        assert pids == {first.proc.pid, second.proc.pid}, pids
        viewer = MjpegReader(first.port)
        try:
            assert_in_order_once(viewer.wait_for(10), "a viewer of the shared port")
        finally:
            viewer.close()
        # Without the option the port is not shared: one line, status 2.
        third = ServerProcess(["--camera", source, *CAMERA], folders[2] / "server")
        third.port = first.port
        with pytest.raises(RuntimeError, match="exited with 2"):
            third.start()
        assert "Address already in use" in third.log_text()
    finally:
        first.stop()
        second.stop()


def test_the_pages_through_nginx_play_the_edges_camera(cluster, page):
    """Every engine: the index's <img>, the canvas viewer and the kiosk, through nginx."""
    page.goto(cluster.nginx.url)
    page.wait_for_function(
        "() => { const i = document.querySelector('#stream'); return i && i.naturalWidth === 320; }",
        timeout=15000,
        polling=50,
    )
    page.goto(cluster.nginx.url + "viewer")
    page.wait_for_function("() => window.camstream.framesDrawn >= 10", timeout=15000, polling=50)
    assert page.evaluate("() => window.camstream.connected")
    page.goto(cluster.nginx.url + "kiosk")
    page.wait_for_function("() => window.camstream.framesShown >= 10", timeout=15000, polling=50)
    assert page.evaluate("() => window.camstream.mode") == "ws", "the kiosk fell back to MJPEG"
    # A smaller variant of the origin's frames, encoded by the edge that serves it.
    with urllib.request.urlopen(cluster.nginx.url + "snapshot.jpg?width=160", timeout=10) as response:
        assert Image.open(io.BytesIO(response.read())).size == (160, 120)
    assert status(cluster.origin)["publishing"]["edge_viewers"] >= 0
