"""``/ws``: the WebSocket handler against a real in-process server.

Two servers: the application of ``server.make_app`` over the files camera (the
colour frames of conftest, 30 fps), and a bare one whose feed is ticked by hand
over a :class:`FakeCamera` and a :class:`ManualClock`, for the flow-control
rules that must not depend on timing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import logging
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import tornado.web
import tornado.websocket
from PIL import Image
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

import server
from feed import FrameFeed
from frame import Frame
from handlers.cors import normalize_origin
from handlers.ws import (
    MAX_CLIENT_MESSAGE_BYTES,
    WsHandler,
    _refusals_logged,
    binary_frame,
    frame_info,
    ws_message,
)
from harness.colours import COLOURS, jpeg, nearest_colour
from outputs.variants import Variants
from tests.fakes import FakeCamera, ManualClock

ALLOWED = "http://good.example"


@pytest.fixture
def settings(frames_dir: Path) -> server.Settings:
    return server.Settings.single(
        "files", str(frames_dir), fps=30, idle_timeout_s=10, allow_origins=(ALLOWED,)
    )


async def wait_until(predicate, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` on the IOLoop until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def connect(port: int, path: str = "/ws", origin: str | None = None, **headers: str):
    if origin is not None:
        headers["Origin"] = origin
    request = HTTPRequest(f"ws://127.0.0.1:{port}{path}", headers=headers, request_timeout=5)
    return await asyncio.wait_for(tornado.websocket.websocket_connect(request), 5)


async def read(ws, timeout_s: float = 5.0):
    return await asyncio.wait_for(ws.read_message(), timeout_s)


async def hello(ws) -> dict:
    """Ask for the hello (any control message does) and return it; frames before it are skipped."""
    await ws.write_message("{}")
    while True:
        message = await read(ws)
        assert message is not None, "the socket closed"
        if isinstance(message, str):
            break
    body = json.loads(message)
    assert body["type"] == "hello", "the first text message is the hello"
    assert (await reply(ws))["type"] == "reply", "the reply to {} follows the hello"
    return body


async def frames(ws, count: int) -> list[bytes]:
    out = []
    while len(out) < count:
        message = await read(ws)
        assert message is not None, "the socket closed"
        if isinstance(message, bytes):
            out.append(message)
    return out


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- the wire format, as pure functions ---------------------------------------
def test_ws_message_is_the_jpeg_with_a_comment_pillow_reads():
    original = jpeg((0, 0, 255), (32, 24))
    message = ws_message(Frame(original, 7, 1700000000.25, 32, 24))
    image = decode(message)
    assert image.format == "JPEG" and image.size == (32, 24)
    assert image.info["comment"] == b"camstream seq=7 t=1700000000.250000"
    assert decode(original).tobytes() == image.tobytes()
    assert frame_info(message) == (original, 7, 1700000000.25)
    # The comment goes after the JFIF APP0 header, which must stay first.
    assert message[2:4] == b"\xff\xe0" == original[2:4]


def test_ws_message_after_several_app_segments():
    exif = Image.Exif()
    exif[0x010F] = "camstream-test"
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(out, format="JPEG", exif=exif.tobytes())
    original = out.getvalue()
    message = ws_message(Frame(original, 1, 5.0, 16, 16))
    assert frame_info(message) == (original, 1, 5.0)
    image = decode(message)
    assert image.getexif()[0x010F] == "camstream-test"


def test_non_jpeg_data_passes_unchanged():
    assert ws_message(Frame(b"not a jpeg", 1, 1.0, 1, 1)) == b"not a jpeg"
    assert frame_info(b"not a jpeg") is None
    assert frame_info(jpeg()) is None  # a JPEG without our comment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://good.example", "http://good.example"),
        ("HTTP://Good.Example:80/", "http://good.example"),
        ("https://a.example:443", "https://a.example"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_normalize_origin(text, expected):
    assert normalize_origin(text) == expected


@pytest.mark.parametrize(
    "text", ["good.example", "ftp://x.example", "http://x.example/path", "http://u@x.example", "*", "null"]
)
def test_normalize_origin_refuses_what_is_not_an_origin(text):
    with pytest.raises(ValueError):
        normalize_origin(text)


# -- the option ---------------------------------------------------------------
def test_allow_origin_option_and_environment():
    assert server.parse_settings([], env={}).allow_origins == ()
    settings = server.parse_settings(
        ["--allow-origin", "https://a.example", "--allow-origin", "HTTP://B.example:80"], env={}
    )
    assert settings.allow_origins == ("https://a.example", "http://b.example")
    env = {"CAMSTREAM_ALLOW_ORIGIN": "https://a.example, http://c.example:8080"}
    assert server.parse_settings([], env=env).allow_origins == ("https://a.example", "http://c.example:8080")
    # The command line replaces the environment's list rather than adding to it.
    assert server.parse_settings(["--allow-origin", "http://d.example"], env=env).allow_origins == (
        "http://d.example",
    )


@pytest.mark.parametrize("argv", [["--allow-origin", "d.example"], ["--allow-origin", "http://d.example/x"]])
def test_a_bad_origin_is_one_line_and_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        server.parse_settings(argv, env={})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-origin" in err


def test_a_bad_origin_in_the_environment_is_refused(capsys):
    with pytest.raises(SystemExit):
        server.parse_settings([], env={"CAMSTREAM_ALLOW_ORIGIN": "https://ok.example,nope"})
    assert "nope" in capsys.readouterr().err


# -- the real application -----------------------------------------------------
@pytest.mark.alone  # every one of 30 frames a second read, none skipped
@pytest.mark.gen_test(timeout=20)
async def test_hello_then_one_binary_message_per_frame_equal_to_the_frames(port, feed, frames_dir):
    originals = {p.read_bytes() for p in frames_dir.glob("*.jpg")}
    ws = await connect(port)
    greeting = await hello(ws)
    assert greeting["camera"] == "files" and greeting["fps"] == 30
    assert abs(greeting["server_time"] - time.time()) < 5
    assert greeting["max_message_bytes"] == MAX_CLIENT_MESSAGE_BYTES
    messages = await frames(ws, 12)
    seqs, colours = [], []
    for message in messages:
        info = frame_info(message)
        assert info is not None, "every frame carries its seq and timestamp"
        original, seq, stamp = info
        assert original in originals, "the JPEG is the camera's own, byte for byte"
        image = decode(message)
        assert image.size == (160, 120)
        colours.append(nearest_colour(image.getpixel((80, 60))))
        seqs.append(seq)
        assert abs(stamp - time.time()) < 5
    assert seqs == sorted(set(seqs)), "a frame came twice or out of order"
    for a, b in itertools.pairwise(colours):
        assert b == (a + 1) % len(COLOURS)  # each message is the next frame: none skipped
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_client_that_never_speaks_gets_jpeg_frames_only(port):
    # The simplest page turns every message into a JPEG blob: no text may reach it.
    ws = await connect(port)
    for _ in range(20):
        message = await read(ws)
        assert isinstance(message, bytes), f"a text message before the client spoke: {message!r}"
        decode(message)  # every message is a whole JPEG
    # Its first control message gets the hello, then the reply; later ones only the reply.
    await ws.write_message(json.dumps({"time": 5}))
    await ws.write_message(json.dumps({"time": 6}))
    texts = []
    while len(texts) < 3:
        message = await read(ws)
        assert message is not None, "the socket closed"
        if isinstance(message, str):
            texts.append(json.loads(message))
    assert [t["type"] for t in texts] == ["hello", "reply", "reply"]
    assert texts[0]["camera"] == "files" and texts[0]["max_message_bytes"] == MAX_CLIENT_MESSAGE_BYTES
    assert [t["time"] for t in texts[1:]] == [5, 6]
    ws.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("path", ["/ws/", "/ws?_=123&x", "/ws/?token=abc"])
async def test_trailing_slash_and_junk_query(port, path):
    ws = await connect(port, path)
    await hello(ws)
    assert len(await frames(ws, 2)) == 2
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_closed_client_is_unsubscribed(port, feed):
    first, second = await connect(port), await connect(port)
    await frames(first, 1)
    await frames(second, 1)
    assert feed.subscriber_count == 2
    first.close()
    await wait_until(lambda: feed.subscriber_count == 1, what="one subscriber left")
    assert len(await frames(second, 3)) == 3  # the other one carries on
    second.close()
    await wait_until(lambda: feed.subscriber_count == 0, what="no subscriber left")


@pytest.mark.gen_test(timeout=20)
async def test_a_client_that_vanishes_is_unsubscribed(port, feed):
    ws = await connect(port)
    await frames(ws, 1)
    ws.protocol.stream.close()  # no closing handshake: the TCP connection just ends
    await wait_until(lambda: feed.subscriber_count == 0, what="the subscriber dropped")
    ws.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("same", True),
        (ALLOWED, True),
        ("http://GOOD.example:80", True),
        ("https://good.example", False),
        ("http://evil.example", False),
        ("http://good.example.evil.example", False),
        ("null", False),
    ],
)
async def test_origin(port, feed, origin, allowed):
    if origin == "same":
        origin = f"http://127.0.0.1:{port}"
    if allowed:
        ws = await connect(port, origin=origin)
        assert len(await frames(ws, 1)) == 1
        ws.close()
        return
    with pytest.raises(HTTPClientError) as refused:
        await connect(port, origin=origin)
    assert refused.value.code == 403
    assert feed.subscriber_count == 0


@pytest.mark.gen_test(timeout=20)
async def test_a_refusal_behind_a_proxy_without_host_is_one_warning_that_names_the_fix(port, caplog):
    # nginx's default passes its upstream's address as Host, not the browser's.
    _refusals_logged.clear()
    page = "http://camera.example:8080"
    for _ in range(3):
        with pytest.raises(HTTPClientError) as refused:
            await connect(port, origin=page, Host="backend:8080")
        assert refused.value.code == 403
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    for part in (page, "backend:8080", "proxy_set_header Host $host", f"--allow-origin {page}"):
        assert part in warnings[0]


@pytest.mark.gen_test(timeout=20)
async def test_a_page_can_ask_why_its_sockets_are_refused(port, http_client):
    # Browsers hide a handshake's status from scripts: a plain GET tells the page.
    base = f"http://127.0.0.1:{port}/ws?origin="
    for origin, host, ok in [
        ("http://camera.example:8080", "backend:8080", False),
        ("http://camera.example:8080", "camera.example:8080", True),
        (ALLOWED, "backend:8080", True),
    ]:
        response = await http_client.fetch(base + urllib.parse.quote(origin), headers={"Host": host})
        answer = json.loads(response.body)
        assert answer["ok"] is ok
        assert response.headers["Content-Type"] == "application/json"
        if not ok:
            assert origin in answer["reason"] and host in answer["reason"]
    # Without ?origin a plain GET is still Tornado's 400 for a missing upgrade.
    response = await http_client.fetch(f"http://127.0.0.1:{port}/ws", raise_error=False)
    assert response.code == 400


@pytest.mark.gen_test(timeout=20)
async def test_a_cross_site_fetch_from_an_unknown_origin_is_refused(port):
    # Browsers send Sec-Fetch-Site; a cross-site page with our host in Origin is still refused.
    with pytest.raises(HTTPClientError) as refused:
        await connect(port, origin="http://evil.example", **{"Sec-Fetch-Site": "cross-site"})
    assert refused.value.code == 403
    ws = await connect(port, origin=ALLOWED, **{"Sec-Fetch-Site": "cross-site"})
    await hello(ws)
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_no_per_message_compression(port):
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", request_timeout=5)
    ws = await tornado.websocket.websocket_connect(request, compression_options={})
    assert "sec-websocket-extensions" not in ws.headers
    await hello(ws)
    ws.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x00\x01binary", 1003),
        ("not json", 1007),
        ("[" * 3000, 1007),  # nested deeper than json.loads goes
        ("[1, 2]", 1008),
        ('"fps"', 1008),
        ('{"fps": -1}', 1008),
        ('{"fps": "fast"}', 1008),
        ('{"fps": true}', 1008),
        ('{"fps": 1e999}', 1008),
        ('{"fps": 121}', 1008),
        ('{"time": "now"}', 1008),
        ("x" * (MAX_CLIENT_MESSAGE_BYTES + 1), 1009),
    ],
)
async def test_bad_messages_close_only_that_client(port, feed, message, code):
    good, bad = await connect(port), await connect(port)
    await frames(good, 1)
    await frames(bad, 1)
    await bad.write_message(message, binary=isinstance(message, bytes))
    deadline = time.monotonic() + 5
    while await read(bad) is not None:  # frames already on the way, then the close
        assert time.monotonic() < deadline, "the bad client was not closed"
    assert bad.close_code == code
    bad.close()
    assert len(await frames(good, 5)) == 5
    await wait_until(lambda: feed.subscriber_count == 1, what="the bad client unsubscribed")
    good.close()


async def reply(ws) -> dict:
    """The next text message (frames on the way are passed over)."""
    while True:
        message = await read(ws)
        assert message is not None, "the socket closed"
        if isinstance(message, str):
            return json.loads(message)


@pytest.mark.gen_test(timeout=20)
async def test_control_messages_are_answered(port):
    ws = await connect(port)
    await hello(ws)
    for request, fps in [({"fps": 10}, 10.0), ({"fps": 0.5}, 0.5), ({"fps": 0}, None), ({"zoom": 2}, None)]:
        await ws.write_message(json.dumps(request))
        answer = await reply(ws)
        assert answer.pop("type") == "reply"
        assert abs(answer.pop("server_time") - time.time()) < 5
        assert answer.pop("variant")["variant"] == "source"
        assert answer == {"fps": fps}
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_time_is_echoed_for_the_clock_offset(port):
    ws = await connect(port)
    await hello(ws)
    before = time.time()
    await ws.write_message(json.dumps({"time": 1234.5, "fps": 15}))
    answer = await reply(ws)
    after = time.time()
    assert answer["time"] == 1234.5 and answer["fps"] == 15
    assert before - 0.001 <= answer["server_time"] <= after + 0.001
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_feed_close_ends_the_socket_as_going_away(port, feed):
    ws = await connect(port)
    await frames(ws, 1)
    feed.close()
    while await read(ws) is not None:
        pass
    assert ws.close_code == 1001
    ws.close()


# -- a feed ticked by hand ----------------------------------------------------
@dataclass
class HandFed:
    port: int
    feed: FrameFeed
    camera: FakeCamera
    clock: ManualClock

    def push(self, data: bytes) -> Frame:
        frame = self.camera.push(data)
        self.feed.tick()
        return frame


@pytest.fixture
def hand(io_loop):
    clock = ManualClock()
    camera = FakeCamera()
    feed = FrameFeed(camera, name="fake", idle_timeout_s=10, repeat_after_s=1.0, clock=clock)
    variants = Variants(feed).attach()
    app = tornado.web.Application([(r"/ws", WsHandler, {"variants": variants, "clock": clock.monotonic})])
    sock, port = bind_unused_port()
    http = HTTPServer(app)
    http.add_sockets([sock])
    yield HandFed(port, feed, camera, clock)
    feed.close()
    http.stop()
    io_loop.run_sync(http.close_all_connections, timeout=5)


def picture(n: int) -> bytes:
    return jpeg(COLOURS[n % len(COLOURS)], (32, 24))


@pytest.mark.gen_test(timeout=20)
async def test_closing_unsubscribes_at_once_not_at_the_next_frame(hand):
    # No tick runs here: only the handler's on_close can unsubscribe.
    ws = await connect(hand.port)
    await hello(ws)
    await wait_until(lambda: hand.feed.subscriber_count == 1)
    ws.close()
    await wait_until(lambda: hand.feed.subscriber_count == 0, what="unsubscribed on close")
    assert hand.clock.running_timers() == []  # the last one out stops the polling


@pytest.mark.gen_test(timeout=20)
async def test_a_still_picture_is_repeated_about_once_a_second(hand):
    ws = await connect(hand.port)
    await hello(ws)
    await wait_until(lambda: hand.feed.subscriber_count == 1)
    hand.push(picture(1))
    first = frame_info((await frames(ws, 1))[0])
    hand.clock.advance(0.5)
    hand.feed.tick()
    hand.clock.advance(0.5)
    hand.feed.tick()
    again = frame_info((await frames(ws, 1))[0])
    assert again == first  # same seq: a keep-alive the client does not draw twice
    hand.push(picture(2))
    newer = frame_info((await frames(ws, 1))[0])
    assert newer[1] == first[1] + 1
    ws.close()


@pytest.mark.gen_test(timeout=20)
async def test_fps_cap_skips_frames_that_come_too_early(hand):
    ws = await connect(hand.port)
    await hello(ws)
    await ws.write_message(json.dumps({"fps": 10}))
    assert (await reply(ws))["fps"] == 10.0
    # Each frame that is sent is read before the next push, so its write is done
    # and only the cap can hold a frame back.
    hand.push(picture(1))  # t = 0: sent
    assert frame_info((await frames(ws, 1))[0])[0] == picture(1)
    hand.clock.advance(0.05)
    hand.push(picture(2))  # t = 0.05: too early for 10 fps
    hand.clock.advance(0.06)
    hand.push(picture(3))  # t = 0.11: due
    assert frame_info((await frames(ws, 1))[0])[0] == picture(3)
    hand.clock.advance(0.03)
    hand.push(picture(4))  # t = 0.14: too early
    hand.clock.advance(0.07)
    hand.push(picture(5))  # t = 0.21: due
    assert frame_info((await frames(ws, 1))[0])[0] == picture(5)
    # Lifting the cap: every frame again.
    await ws.write_message(json.dumps({"fps": None}))
    assert (await reply(ws))["fps"] is None
    for n in (6, 7, 8):
        hand.clock.advance(0.001)
        hand.push(picture(n))
        assert frame_info((await frames(ws, 1))[0])[0] == picture(n)
    ws.close()


# A client that does not read: raw TCP with a small receive buffer, so the
# server's write of a frame stays pending once the socket buffers are full.
class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.port = port
        self.buffer = bytearray()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(self.sock, request.encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await loop.sock_recv(self.sock, 4096)
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)

    def _next(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, at = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, at = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < at + length:
            return None
        payload = bytes(buf[at : at + length])
        del buf[: at + length]
        return opcode, payload

    async def message(self, timeout_s: float = 5.0) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        while (found := self._next()) is None:
            left = deadline - time.monotonic()
            assert left > 0, "no message in time"
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), left)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        return found

    def close(self) -> None:
        self.sock.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_client_that_does_not_read_skips_frames_then_gets_the_newest(hand):
    client = RawClient(hand.port)
    await client.open()
    await wait_until(lambda: hand.feed.subscriber_count == 1)
    big = 256 * 1024

    def payload(n: int) -> bytes:
        return b"\xff\xd8" + (b"%08d" % n) * (big // 8)

    pushed = 0
    while hand.feed.frames_skipped == 0:  # fill the socket buffers
        assert pushed < 200, "the server never held back a frame"
        pushed += 1
        hand.push(payload(pushed))
        await asyncio.sleep(0)  # let the IOLoop flush what the socket takes
    sent = hand.feed.frames_sent
    for _ in range(20):  # while one frame is in flight, nothing more is written
        pushed += 1
        hand.push(payload(pushed))
    assert hand.feed.frames_sent == sent
    assert hand.feed.frames_skipped == 21
    newest = pushed

    received = []
    while not received or received[-1] != newest:
        hand.feed.tick()  # no new frame: delivers the newest to the client once it is free
        opcode, data = await client.message()
        assert opcode == 2
        info = frame_info(data)
        assert info is not None
        received.append(int(info[0][2:10]))
    # Everything written before the client stalled, then straight to the newest.
    assert received == [*range(1, sent + 1), newest]
    client.close()
    await wait_until(lambda: hand.feed.subscriber_count == 0, what="the raw client dropped")


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
async def test_every_message_length_form_reaches_a_real_client(hand, size):
    # binary_frame writes the length in 7, 16 or 64 bits; Tornado's client
    # checks the framing byte by byte.
    ws = await connect(hand.port)
    await hello(ws)
    await wait_until(lambda: hand.feed.subscriber_count == 1)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)  # not a JPEG: sent as it is
    hand.push(data)
    assert (await frames(ws, 1))[0] == data
    if size:  # a second frame, of other bytes (the same bytes would not be sent again)
        other = bytes(255 - b for b in data)
        hand.push(other)
        assert (await frames(ws, 1))[0] == other
    ws.close()


@pytest.mark.parametrize(
    ("size", "head"),
    [
        (5, b"\x82\x05"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_binary_frame_heads(size, head):
    assert binary_frame(b"x" * size) == head + b"x" * size
