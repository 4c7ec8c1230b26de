"""The bus is input like any other (cameras/nats.py's check_message): an edge drops and
counts every message that is not a frame, with one WARNING a minute; its /status is strict
JSON and its /metrics valid exposition whatever comes in; its viewers get only real JPEGs;
and the README's NATS permissions keep the frames subject to the origin."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import math
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bus import INTEREST_TTL_S, frame_headers
from cameras import nats as edge
from cameras.nats import MAX_FRAME_BYTES, REASONS, RejectedMessage, Rejections, check_message
from feed import FrameFeed
from frame import Frame
from handlers.ws import frame_info
from harness.natsserver import NATS_SERVER, NatsServer
from harness.process import ROOT
from outputs.publisher import MAX_EDGES, Publisher, parse_interest
from outputs.sizes import MAX_WIDTH
from tests.conftest import run_private
from tests.fakes import FakeCamera
from tests.mjpeg_client import StreamReader

NOW = 1_700_000_000.0
DAY_S = 86400.0


def picture(
    text: str, colour: tuple[int, int, int] = (20, 90, 160), size: tuple[int, int] = (640, 480)
) -> bytes:
    """A JPEG of ``size`` with ``text`` on it: each text a different picture."""
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).text((20, 20), text, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


GOOD = picture("good")


def headers_of(jpeg: bytes, at: float, **changed: str) -> dict[str, str]:
    """An origin's headers for a 640x480 ``jpeg`` captured ``at``, with ``changed``
    (``Camstream_Time="nan"``: underscores for dashes) in place of its own."""
    headers = frame_headers(Frame(jpeg, 7, at, 640, 480))
    headers.update({name.replace("_", "-"): value for name, value in changed.items()})
    return headers


def rogues(now: float, jpeg: bytes) -> list[tuple[str, bytes, dict[str, str] | None, str]]:
    """Every kind of message an edge must drop: ``(name, payload, headers, reason)``.
    Those whose payload is a real JPEG get ``jpeg`` (a different one per test run if the
    caller wants to spot it)."""
    year_s = 365 * DAY_S
    return [
        ("empty", b"", headers_of(b"", now), edge.EMPTY),
        ("not a jpeg", b"not a jpeg", headers_of(b"", now), edge.NO_SOI),
        ("half a JPEG", jpeg[: len(jpeg) // 2], headers_of(jpeg, now), edge.NO_EOI),
        ("SOI without EOI", jpeg[:-2], headers_of(jpeg, now), edge.NO_EOI),
        ("SOI and EOI only", b"\xff\xd8\xff\xd9", headers_of(jpeg, now), edge.NO_SOF),
        (
            "over the size limit",
            b"\xff\xd8" + bytes(MAX_FRAME_BYTES - 3) + b"\xff\xd9",
            headers_of(jpeg, now),
            edge.TOO_LARGE,
        ),
        ("time nan", jpeg, headers_of(jpeg, now, Camstream_Time="nan"), edge.BAD_TIME),
        ("time inf", jpeg, headers_of(jpeg, now, Camstream_Time="inf"), edge.BAD_TIME),
        ("time -inf", jpeg, headers_of(jpeg, now, Camstream_Time="-inf"), edge.BAD_TIME),
        ("time -1e308", jpeg, headers_of(jpeg, now, Camstream_Time="-1e308"), edge.BAD_TIME),
        ("time 1e308", jpeg, headers_of(jpeg, now, Camstream_Time="1e308"), edge.BAD_TIME),
        ("time a year ago", jpeg, headers_of(jpeg, now, Camstream_Time=f"{now - year_s:.6f}"), edge.BAD_TIME),
        ("time in a year", jpeg, headers_of(jpeg, now, Camstream_Time=f"{now + year_s:.6f}"), edge.BAD_TIME),
        ("time garbage", jpeg, headers_of(jpeg, now, Camstream_Time="twelve o'clock"), edge.BAD_TIME),
        ("width -5", jpeg, headers_of(jpeg, now, Camstream_Width="-5"), edge.BAD_SIZE),
        ("height 99999999999", jpeg, headers_of(jpeg, now, Camstream_Height="99999999999"), edge.BAD_SIZE),
        ("width 0", jpeg, headers_of(jpeg, now, Camstream_Width="0"), edge.BAD_SIZE),
        ("width not the JPEG's", jpeg, headers_of(jpeg, now, Camstream_Width="320"), edge.SIZE_MISMATCH),
        ("seq -1", jpeg, headers_of(jpeg, now, Camstream_Seq="-1"), edge.BAD_SEQ),
        ("seq abc", jpeg, headers_of(jpeg, now, Camstream_Seq="abc"), edge.BAD_SEQ),
        ("seq beyond 64 bits", jpeg, headers_of(jpeg, now, Camstream_Seq=str(2**64)), edge.BAD_SEQ),
        ("live maybe", jpeg, headers_of(jpeg, now, Camstream_Live="maybe"), edge.BAD_LIVE),
    ]


ROGUE_NAMES = [name for name, *_ in rogues(NOW, GOOD)]


# -- the check, a pure function -------------------------------------------------------
@pytest.mark.parametrize("index", range(len(ROGUE_NAMES)), ids=ROGUE_NAMES)
def test_each_rogue_message_is_refused_with_its_reason(index):
    name, payload, headers, reason = rogues(NOW, GOOD)[index]
    with pytest.raises(RejectedMessage) as refused:
        check_message(payload, headers, NOW)
    assert refused.value.reason == reason, name
    assert str(refused.value) == REASONS[reason]


def test_an_origins_message_is_taken_as_it_was_sent():
    sent = Frame(GOOD, 41, NOW - 0.25, 640, 480, live=False)
    checked = check_message(GOOD, frame_headers(sent), NOW)
    assert (checked.timestamp, checked.width, checked.height, checked.live, checked.timed) == (
        NOW - 0.25,
        640,
        480,
        False,
        True,
    )


def test_a_jpeg_without_headers_is_a_live_frame_captured_on_arrival_at_its_own_size():
    small = picture("no headers", size=(320, 200))
    for headers in (None, {}, {"Other": "x"}):
        checked = check_message(small, headers, NOW)
        assert (checked.timestamp, checked.width, checked.height, checked.live, checked.timed) == (
            NOW,
            320,
            200,
            True,
            False,
        )


def test_the_limits_of_what_an_edge_takes():
    # The same largest side as the rest of the server; times just within a day; the largest seq.
    assert edge.MAX_SIDE == MAX_WIDTH
    assert check_message(GOOD, headers_of(GOOD, NOW - DAY_S + 1), NOW).timed
    assert check_message(GOOD, headers_of(GOOD, NOW, Camstream_Seq=str(2**63 - 1)), NOW)
    assert check_message(GOOD, headers_of(GOOD, NOW, Camstream_Seq="0"), NOW)
    # Nothing may follow EOI, as with a relayed frame.
    for after in (b"\r\n", b"trailing junk"):
        with pytest.raises(RejectedMessage, match="no EOI"):
            check_message(GOOD + after, None, NOW)
    # A frame of exactly the limit is a frame; one byte more is not.
    exact = GOOD[:-2] + bytes(MAX_FRAME_BYTES - len(GOOD)) + b"\xff\xd9"
    assert check_message(exact, None, NOW).width == 640
    with pytest.raises(RejectedMessage) as refused:
        check_message(exact + b"\x00", None, NOW)
    assert refused.value.reason == edge.TOO_LARGE


def test_drops_are_said_once_a_minute_with_their_count():
    rejections = Rejections(every_s=60.0)
    first = rejections.add(edge.NO_SOI, 100.0)
    assert first is not None and first.startswith("dropped a bus message: not a JPEG (no SOI); ")
    assert [rejections.add(edge.BAD_TIME, 100.0 + i) for i in range(1, 12)] == [None] * 11
    later = rejections.add(edge.EMPTY, 165.0)
    assert later == "dropped a bus message: an empty message; 12 dropped in the last 65 s"
    assert rejections.add(edge.EMPTY, 170.0) is None
    assert rejections.total == 14
    counts = rejections.by_reason()
    assert set(counts) == set(REASONS)
    assert (counts[edge.NO_SOI], counts[edge.BAD_TIME], counts[edge.EMPTY]) == (1, 11, 2)


# -- /status is strict JSON whatever a source says ----------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"viewers": 1}',
        b'{"edge": "", "viewers": 1}',
        b'{"edge": 7, "viewers": 1}',
        json.dumps({"edge": "e" * 201}).encode(),
        b'{"edge": "e", "viewers": -1}',
        b'{"edge": "e", "viewers": 1e400}',
        b'{"edge": "e", "viewers": Infinity}',
        b'{"edge": "e", "viewers": NaN}',
        b'{"edge": "e", "viewers": 2.5}',
        b'{"edge": "e", "viewers": true}',
        b'{"edge": "e", "viewers": 1000001}',
        b'{"edge": "e", "viewers": "3"}',
        b"[" * 100_000,
    ],
)
def test_an_origin_refuses_what_is_not_an_edges_interest(data: bytes):
    assert parse_interest(data) is None


def test_an_origin_remembers_a_bounded_number_of_edges():
    assert parse_interest(b'{"edge": "hall", "viewers": 3}') == ("hall", 3)
    assert parse_interest(b'{"edge": "hall"}') == ("hall", 0)
    camera = FakeCamera()
    publisher = Publisher(FrameFeed(camera, name="door"), ["nats://127.0.0.1:1"])

    class Message:
        def __init__(self, data: bytes) -> None:
            self.data = data

    async def hear_all() -> None:
        for n in range(MAX_EDGES + 500):
            await publisher._interest(Message(json.dumps({"edge": f"e{n}", "viewers": 1}).encode()))
        await publisher._interest(Message(b'{"edge": "e", "viewers": Infinity}'))

    run_private(hear_all())
    # Every edge is live (heard just now): the bound holds, newcomers are refused and counted.
    assert len(publisher.edges) == MAX_EDGES
    assert publisher.status()["interest_rejected"] == 500 + 1
    assert publisher.status()["edge_viewers"] == MAX_EDGES
    # Once they have gone quiet, a newcomer takes the place of the expired.
    for name, (viewers, _) in list(publisher.edges.items()):
        publisher.edges[name] = (viewers, time.monotonic() - INTEREST_TTL_S - 1)
    run_private(publisher._interest(Message(b'{"edge": "late", "viewers": 2}')))
    assert publisher.edges.keys() == {"late"}


def refuse_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as JSON.parse does."""
    return json.loads(text, parse_constant=refuse_constant)


class TestNonFiniteFigures:
    """A source whose frame has a capture time that is not a number: /status says null."""

    @pytest.fixture
    def feed(self):
        feed = FrameFeed(FakeCamera(), name="odd", idle_timeout_s=10)
        yield feed
        feed.close()

    @pytest.mark.gen_test(timeout=20)
    async def test_a_nan_in_a_status_is_null(self, http_client, base_url, feed):
        feed.camera.start()
        feed.camera.push(GOOD, timestamp=math.nan)
        for path in ("/status", "/cameras/odd/status"):
            response = await http_client.fetch(base_url + path)
            assert response.code == 200
            body = strict_json(response.body.decode())
            assert body["last_frame_age_s"] is None
            assert body["cameras" if path == "/status" else "name"]


# -- an edge behind a real nats-server -------------------------------------------------------
def read_status(proc) -> dict:
    with urllib.request.urlopen(proc.url + "status", timeout=10) as response:
        return strict_json(response.read().decode())


def read_metrics(proc) -> dict[str, list]:
    """The edge's /metrics, parsed by prometheus_client's parser: samples by family."""
    with urllib.request.urlopen(proc.url + "metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def wait_for(predicate, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # polling with a deadline


class BusClient:
    """A plain nats-py connection of the test's own (an origin's stand-in, or an
    attacker), on a private loop that runs while each call runs."""

    def __init__(self, url: str, **auth: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []

        async def error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = self.loop.run_until_complete(
            nats.connect(url, error_cb=error, allow_reconnect=False, connect_timeout=5, **auth)
        )

    def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish and flush: the NATS server has the message (or refused it) on return."""

        async def publish() -> None:
            await self.nc.publish(subject, payload, headers=headers)
            await self.nc.flush(timeout=10)

        self.loop.run_until_complete(publish())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a connection the server ended already
            self.loop.run_until_complete(self.nc.close())
        self.loop.close()


class WsReader:
    """A WebSocket viewer on a thread: every binary message it got."""

    def __init__(self, port: int, path: str = "/ws?adapt=0") -> None:
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.messages: list[bytes] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._opened.wait(10), f"the WebSocket did not open: {self.error}"

    def _run(self) -> None:
        try:
            with connect(self.url, open_timeout=10, close_timeout=2, max_size=None, compression=None) as ws:
                self._opened.set()
                while not self._stop.is_set():
                    try:
                        message = ws.recv(timeout=0.25)
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):
                        with self.changed:
                            self.messages.append(message)
                            self.changed.notify_all()
        except (ConnectionClosed, OSError) as exc:
            self.error = exc
            self._opened.set()

    def count(self) -> int:
        with self.changed:
            return len(self.messages)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)


def decodes(jpeg: bytes) -> bool:
    """Whether Pillow reads the whole picture."""
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def handled(proc) -> int:
    """Bus messages the edge took or dropped so far."""
    bus = read_status(proc)["bus"]
    return bus["frames_received"] + bus["frames_rejected"]


def deliver(client: BusClient, proc, subject: str, payload: bytes, headers: dict[str, str] | None) -> bool:
    """Publish one message; True once the edge has taken or dropped it (within 2 s)."""
    before = handled(proc)
    client.publish(subject, payload, headers)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if handled(proc) > before:
            return True
        time.sleep(0.02)  # polling with a deadline
    return False


@pytest.fixture
def nats_path() -> None:
    assert Path(NATS_SERVER).exists(), "nats-server is not installed (scripts/test.sh installs it)"


@pytest.mark.slow
@pytest.mark.usefixtures("nats_path")
def test_rogue_messages_reach_no_viewer_and_status_and_metrics_stay_strict(start_server, tmp_path):
    # max_payload above the edge's own limit, so that the NATS server carries the oversized "JPEG".
    server = NatsServer(tmp_path, config=f"max_payload: {MAX_FRAME_BYTES + 1024 * 1024}\n").start()
    subject = "camstream.door.frames"
    proc = start_server("--camera", f"lobby=nats:{server.url}/door")
    client = BusClient(server.url)
    viewers: list[Any] = []
    counter = iter(range(1_000_000))

    def good() -> bytes:
        """A new real JPEG, published as an origin would, and shown by the edge's viewer."""
        jpeg = picture(f"good {next(counter)}")
        client.publish(subject, jpeg, headers_of(jpeg, time.time()))
        return jpeg

    try:
        mjpeg = StreamReader(proc.port, "/stream.mjpg?adapt=0")
        viewers.append(mjpeg)
        variant = StreamReader(proc.port, "/stream.mjpg?width=320&adapt=0")
        viewers.append(variant)
        ws = WsReader(proc.port)
        viewers.append(ws)

        def shows(jpeg: bytes) -> bool:
            return any(part.body == jpeg for part in mjpeg.parts[-5:])

        # The edge's camera subscribes once its first viewer came: good frames until all three see them.
        deadline = time.monotonic() + 30
        while not (read_status(proc)["online"] and mjpeg.parts and variant.parts and ws.count()):
            assert time.monotonic() < deadline, "the edge's viewers never got the good frames"
            good()
            time.sleep(0.05)  # the pace of the good frames, not a synchronisation

        # Each rogue message, then a good one the viewer must see as usual.
        marked = []
        for name, payload, headers, _reason in rogues(time.time(), GOOD):
            if payload == GOOD:  # a real JPEG with a bad header: one of its own, to spot it
                payload = picture(f"rogue {name}", colour=(200, 0, 200))
                marked.append(payload)
            assert deliver(client, proc, subject, payload, headers), f"the edge never handled {name!r}"
            shown = good()
            wait_for(lambda shown=shown: shows(shown), f"a good frame after {name!r} was not shown")
        # A real JPEG without any headers is a frame, shown as usual.
        bare = picture("no headers")
        assert deliver(client, proc, subject, bare, None)
        wait_for(lambda: shows(bare), "a JPEG without headers was not shown")

        # The variant viewer goes on: five more frames of it after the rogue messages.
        variant_before, ws_before = len(variant.parts), ws.count()
        deadline = time.monotonic() + 30
        while len(variant.parts) < variant_before + 5 or ws.count() < ws_before + 5:
            assert time.monotonic() < deadline, "the variant or WebSocket viewer starved"
            shown = good()
            wait_for(lambda shown=shown: shows(shown), "a good frame was not shown")

        # Every frame of every viewer is a whole JPEG, and no rogue one among them.
        for viewer in (mjpeg, variant):
            assert viewer.error is None, viewer.error
            assert all(decodes(part.body) for part in viewer.parts), "a viewer got a part that is no JPEG"
        assert not {part.body for part in mjpeg.parts} & set(marked), "a rogue JPEG reached a viewer"
        with ws.changed:
            messages = list(ws.messages)
        assert all(decodes(message) for message in messages), "a WebSocket viewer got no JPEG"
        infos = [frame_info(message) for message in messages]
        assert None not in infos and not {info[0] for info in infos if info} & set(marked)

        expected = collections.Counter(reason for *_, reason in rogues(time.time(), GOOD))
        body = read_status(proc)  # strict JSON, or it raises
        bus = body["bus"]
        assert bus["frames_rejected"] == sum(expected.values())
        assert bus["frames_rejected_by_reason"] == {reason: expected.get(reason, 0) for reason in REASONS}
        latency = bus["latency_ms"]
        assert all(isinstance(latency[q], float | int) and abs(latency[q]) < 60_000 for q in ("p50", "p99"))
        assert isinstance(body["last_frame_age_s"], float | int) and body["last_frame_age_s"] < 60
        samples = read_metrics(proc)["camstream_frames_rejected"]
        by_reason = {
            s.labels["reason"]: s.value
            for s in samples
            if s.name == "camstream_frames_rejected_total" and s.labels["camera"] == "lobby"
        }
        assert by_reason == {reason: float(expected.get(reason, 0)) for reason in REASONS}

        # One WARNING for all of them (they came within a minute), with the first reason.
        def warnings() -> list[str]:
            return [line for line in proc.log_text().splitlines() if "dropped a bus message" in line]

        wait_for(lambda: bool(warnings()), "no WARNING said a message was dropped")
        lines = warnings()
        assert len(lines) == 1 and " WARNING " in lines[0], lines
        assert "lobby: dropped a bus message: an empty message; " in lines[0]
        assert "not a JPEG OpenCV can read" not in proc.log_text()
    finally:
        for viewer in viewers:
            viewer.close()
        client.close()
        server.stop()


# -- NATS permissions: only the origin publishes frames ------------------------------------
def readme_authorization() -> str:
    """The ``authorization { ... }`` block of the README (indented code), as written there."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^    authorization \{\n.*?^    \}\n", text, re.MULTILINE | re.DOTALL)
    assert found, "the README has no authorization block"
    return "\n".join(line[4:] for line in found.group(0).splitlines()) + "\n"


@pytest.mark.slow
@pytest.mark.usefixtures("nats_path")
def test_the_readmes_permissions_keep_an_edges_credentials_from_publishing_frames(start_server, tmp_path):
    server = NatsServer(tmp_path, config=readme_authorization()).start()
    origin_auth, edge_auth = tmp_path / "origin-auth", tmp_path / "edge-auth"
    origin_auth.write_text("origin:ORIGIN-PASSWORD\n")
    edge_auth.write_text("edge:EDGE-PASSWORD\n")
    start_server("--publish", server.url, "--bus-auth-file", str(origin_auth))
    proc = start_server("--camera", f"lobby=nats:{server.url}/emulated", "--bus-auth-file", str(edge_auth))
    attacker = None
    viewer = StreamReader(proc.port, "/stream.mjpg?adapt=0")
    try:
        # The edge (which may only hear frames and say its interest) gets the origin's frames.
        viewer.wait_for(1, 20)
        wait_for(lambda: read_status(proc)["online"], "the edge never got the origin's frames")
        attacker = BusClient(server.url, user="edge", password="EDGE-PASSWORD")
        rogue = picture("rogue", colour=(200, 0, 200))
        for _ in range(20):
            attacker.publish("camstream.emulated.frames", rogue, headers_of(rogue, time.time()))
        wait_for(
            lambda: any("permissions violation" in error.lower() for error in attacker.errors),
            "the NATS server took a frame from the edge's credentials",
        )
        assert "Violation" in server.log_text(), "the NATS server did not log the violation"
        # The edge's viewer goes on with the origin's frames, and none is the attacker's.
        seen = len(viewer.parts)
        viewer.wait_for(seen + 30, 20)
        assert all(part.body != rogue for part in viewer.parts), "the attacker's frame reached a viewer"
        assert all(decodes(part.body) for part in viewer.parts)
        bus = read_status(proc)["bus"]
        assert bus["connected"] and bus["frames_received"] >= 30 and bus["frames_rejected"] == 0
    finally:
        viewer.close()
        if attacker is not None:
            attacker.close()
        server.stop()
