"""Variants through a real server: sizes and qualities on demand, one encode per
frame for all their viewers, none running without a viewer, bad parameters,
frames with the same bytes not sent again, and adaptation for a client that
reads at a fixed rate."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import tornado.websocket
from PIL import Image, ImageChops, ImageStat
from tornado.httpclient import HTTPClientError, HTTPRequest

import server
from cameras.jpeg import jpeg_size
from handlers.ws import frame_info
from harness.colours import jpeg
from tests.conftest import run_private
from tests.mjpeg_client import open_stream, read_parts


@pytest.fixture
def settings() -> server.Settings:
    return server.Settings.single("emulated", fps=30, width=640, height=480, idle_timeout_s=1)


async def wait_until(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def connect(port: int, query: str = ""):
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws{query}", request_timeout=5)
    return await asyncio.wait_for(tornado.websocket.websocket_connect(request), 5)


async def binary(ws, timeout_s: float = 5.0) -> bytes:
    while True:
        message = await asyncio.wait_for(ws.read_message(), timeout_s)
        assert message is not None, "the socket closed"
        if isinstance(message, bytes):
            return message


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


async def fetch(http_client, url: str):
    return await http_client.fetch(url, raise_error=False)


# -- sizes and qualities ------------------------------------------------------------
@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("", (640, 480)),
        ("?width=320", (320, 240)),
        ("?width=300", (320, 240)),  # the smallest step at least this wide
        ("?width=161", (320, 240)),
        ("?width=100", (160, 120)),
        ("?width=1", (80, 60)),  # the smallest step
        ("?width=65535", (640, 480)),  # above the source: the source
        ("?width=320&quality=30", (320, 240)),
        ("?quality=50", (640, 480)),
    ],
)
async def test_a_snapshot_of_a_variant_has_its_size(http_client, base_url, query, size):
    response = await http_client.fetch(base_url + "/snapshot.jpg" + query)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert picture(response.body).size == size


@pytest.mark.gen_test(timeout=30)
async def test_streams_of_a_variant_have_its_size_and_look_like_the_camera(port):
    source = await connect(port, "?adapt=0")
    small = await connect(port, "?width=320&adapt=0")
    rough = await connect(port, "?width=320&quality=30&adapt=0")
    frames: dict[str, dict[int, bytes]] = {"source": {}, "small": {}, "rough": {}}
    common: set[int] = set()
    deadline = time.monotonic() + 10
    while not common:
        assert time.monotonic() < deadline, "no frame of the same moment in the three streams"
        for name, ws in (("source", source), ("small", small), ("rough", rough)):
            original, seq, _ = frame_info(await binary(ws))
            frames[name][seq] = original
        common = set(frames["source"]) & set(frames["small"]) & set(frames["rough"])
    seq = max(common)
    full = picture(frames["source"][seq])
    small_picture = picture(frames["small"][seq])
    assert full.size == (640, 480) and small_picture.size == (320, 240)
    assert picture(frames["rough"][seq]).size == (320, 240)
    # The same moment (variants keep the camera's seq), a sensible picture of it.
    reference = full.resize((320, 240), Image.Resampling.BOX)
    for name, limit in (("small", 6), ("rough", 10)):
        difference = ImageStat.Stat(ImageChops.difference(reference, picture(frames[name][seq]))).mean
        assert max(difference) < limit, (name, difference)
    # Fewer bytes for a lower quality; a 320-wide frame well under a third of the full one.
    assert len(frames["rough"][seq]) < len(frames["small"][seq]) < len(frames["source"][seq]) / 2
    for ws in (source, small, rough):
        ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_an_mjpeg_stream_of_a_variant(port):
    stream, response, parser = await open_stream(port, "/stream.mjpg?width=160")
    assert response.status == 200
    parts = await asyncio.wait_for(read_parts(stream, parser, 5), 10)
    assert {picture(part.body).size for part in parts} == {(160, 120)}
    stream.close()


# -- one encode per frame, and only while watched -------------------------------------
@pytest.mark.alone  # the encoder keeps up with the camera, to 3 frames in 2 s
@pytest.mark.gen_test(timeout=60)
async def test_one_encode_per_frame_for_all_the_viewers_of_a_variant(port, feed, variants):
    viewers = [await connect(port, "?width=320&adapt=0") for _ in range(30)]
    for ws in viewers:
        assert jpeg_size(await binary(ws)) == (320, 240)
    (variant,) = [f for _, f in variants.feeds()]
    before = (feed.camera.frames_captured, variant.camera.frames_encoded)
    await asyncio.sleep(2)  # a measuring window, not a synchronisation
    for ws in viewers:
        assert jpeg_size(await binary(ws)) == (320, 240)
    captured = feed.camera.frames_captured - before[0]
    encoded = variant.camera.frames_encoded - before[1]
    assert captured >= 30
    assert captured - 3 <= encoded <= captured + 1, (captured, encoded)
    status = feed.status()
    assert status["variants"]["sizes"]["320x240 q80"]["subscribers"] == 30
    assert status["subscribers"] == 30 and status["viewers"] == {"ws": 30}
    assert [c["variant"] for c in status["clients"]] == ["320x240 q80"] * 30
    for ws in viewers:
        ws.close()


@pytest.mark.gen_test(timeout=60)
async def test_no_variant_runs_without_a_viewer(port, feed, variants, http_client, base_url):
    ws = await connect(port, "?width=160&adapt=0")
    await binary(ws)
    (variant,) = [f for _, f in variants.feeds()]
    assert variant.camera.running and feed.camera.running
    ws.close()
    # The variant stops after its idle timeout, then the camera after its own.
    await wait_until(lambda: not variant.camera.running, what="the variant stopped")
    await wait_until(lambda: not feed.camera.running, what="the camera stopped")
    status = json.loads((await http_client.fetch(base_url + "/status")).body)
    assert status["variants"]["sizes"]["160x120 q80"]["running"] is False
    assert not any(v["running"] for v in status["variants"]["sizes"].values())
    metrics = (await http_client.fetch(base_url + "/metrics")).body.decode()
    assert 'camstream_variant_running{camera="emulated",variant="160x120 q80"} 0.0' in metrics


@pytest.mark.gen_test(timeout=30)
async def test_the_cap_on_live_variants_serves_the_nearest(port, variants):
    variants.max_variants = 1
    first = await connect(port, "?width=320&adapt=0")
    second = await connect(port, "?width=160&adapt=0")
    assert jpeg_size(await binary(first)) == (320, 240)
    assert jpeg_size(await binary(second)) == (320, 240)  # the one running
    assert len(variants.live_keys()) == 1
    variants.max_variants = 0  # variants off: the camera's own frames
    third = await connect(port, "?width=160&adapt=0")
    assert jpeg_size(await binary(third)) == (640, 480)
    for ws in (first, second, third):
        ws.close()


# -- bad parameters -------------------------------------------------------------------
BAD = [
    ("width=0", "width must be a whole number of pixels, 1-65535"),
    ("width=abc", "width must be a whole number of pixels, 1-65535"),
    ("width=65536", "width must be a whole number of pixels, 1-65535"),
    ("width=", "width must be a whole number of pixels, 1-65535"),
    ("width=-3", "width must be a whole number of pixels, 1-65535"),
    ("width=3.5", "width must be a whole number of pixels, 1-65535"),
    ("quality=0", "quality must be a whole number, 1-100"),
    ("quality=abc", "quality must be a whole number, 1-100"),
    ("quality=101", "quality must be a whole number, 1-100"),
]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("path", ["/stream.mjpg", "/snapshot.jpg", "/ws", "/cameras/emulated/stream"])
@pytest.mark.parametrize(("query", "message"), BAD)
async def test_a_bad_parameter_gets_a_400_naming_the_allowed_values(
    http_client, base_url, path, query, message
):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    if path == "/ws":
        headers["Sec-WebSocket-Key"] = base64.b64encode(os.urandom(16)).decode()
    response = await fetch(http_client, HTTPRequest(f"{base_url}{path}?{query}", headers=headers))
    assert response.code == 400
    body = response.body.decode()
    assert body == f"400 Bad Request: {message}\n"
    assert "Traceback" not in body


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("path", ["/stream.mjpg", "/ws"])
async def test_adapt_is_0_or_1(http_client, base_url, path):
    response = await fetch(http_client, f"{base_url}{path}?adapt=yes")
    assert response.code == 400
    assert response.body.decode() == "400 Bad Request: adapt must be 0 or 1\n"


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("request_", [{"width": -5}, {"width": "wide"}, {"quality": 101}, {"width": True}])
async def test_a_bad_variant_in_a_control_message_closes_that_socket(port, request_):
    ws = await connect(port)
    other = await connect(port)
    await ws.write_message(json.dumps(request_))
    while await asyncio.wait_for(ws.read_message(), 5) is not None:
        pass  # frames, until the close
    assert ws.close_code == 1008
    ws.close()
    assert await binary(other)  # the other client goes on
    other.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_control_message_changes_the_variant_without_reconnecting(port):
    ws = await connect(port, "?adapt=0")
    assert jpeg_size(await binary(ws)) == (640, 480)
    await ws.write_message(json.dumps({"width": 200}))
    texts = []
    while len(texts) < 2:  # the hello, then the reply
        message = await asyncio.wait_for(ws.read_message(), 5)
        if isinstance(message, str):
            texts.append(json.loads(message))
    hello, reply = texts
    assert hello["type"] == "hello" and hello["variant"]["variant"] == "320x240 q80"
    assert reply["variant"] == {**hello["variant"]}
    await wait_until_size(ws, (320, 240))
    await ws.write_message(json.dumps({"width": 0, "quality": 30}))
    changed = None
    while changed is None:
        message = await asyncio.wait_for(ws.read_message(), 5)
        if isinstance(message, str) and json.loads(message)["type"] == "variant":
            changed = json.loads(message)
    assert (changed["width"], changed["height"], changed["quality"]) == (640, 480, 30)
    assert changed["variant"] == "640x480 q30" and changed["adapted"] is False
    await wait_until_size(ws, (640, 480))
    ws.close()


async def wait_until_size(ws, size: tuple[int, int]) -> None:
    deadline = time.monotonic() + 5
    while jpeg_size(await binary(ws)) != size:
        assert time.monotonic() < deadline, f"no {size} frame"


# -- no repeated frames ---------------------------------------------------------------
@pytest.mark.slow
def test_a_still_camera_sends_each_picture_once_then_about_once_a_second(start_server, tmp_path):
    still = tmp_path / "still"
    still.mkdir()
    (still / "only.jpg").write_bytes(jpeg((10, 200, 10), (320, 240)))
    proc = start_server("--camera", "files", "--source", str(still), "--fps", "30")

    async def watch() -> list[int]:
        ws = await connect(proc.port)
        seqs = []
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            seqs.append(frame_info(await binary(ws))[1])
        ws.close()
        return seqs

    seqs = run_private(watch())
    # 90 frames captured, every one the same bytes: the first, then the keep-alive
    # repeat (same seq) about once a second.
    assert 2 <= len(seqs) <= 6, seqs
    assert len(set(seqs)) == 1, seqs
    with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
        status = json.load(response)
    assert status["frames_same"] >= 60
    assert status["frames_sent"] + status["frames_repeated"] <= 8


# -- adaptation -----------------------------------------------------------------------
class PacedClient:
    """A raw WebSocket client that reads at most ``rate`` bytes per second (None:
    as fast as it can), with a small receive buffer, so the server's writes
    stay pending as they would on a slow link."""

    def __init__(self, port: int, path: str = "/ws") -> None:
        self.port, self.path = port, path
        self.rate: float | None = None
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.buffer = bytearray()
        #: (arrival, width) of each new frame; the variant messages.
        self.frames: list[tuple[float, int]] = []
        self.variants: list[dict] = []
        self._last_seq = None

    def open(self) -> None:
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)
        payload = b"{}"
        mask = os.urandom(4)
        self.sock.sendall(
            bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )

    def read_for(self, seconds: float, until=None) -> None:
        """Read for ``seconds`` (or until ``until()`` is true), pacing to ``rate``."""
        started = time.monotonic()
        taken = 0
        while time.monotonic() - started < seconds:
            if until is not None and until():
                return
            chunk = 4096
            if self.rate is not None:
                allowed = self.rate * (time.monotonic() - started) - taken
                if allowed < chunk:
                    time.sleep(min(0.01, (chunk - allowed) / self.rate))  # pacing the reads
                    continue
            try:
                data = self.sock.recv(chunk)
            except TimeoutError:
                continue
            assert data, "the server closed the connection"
            taken += len(data)
            self.buffer += data
            self._parse()

    def _parse(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, at = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + length:
                return
            payload = bytes(buf[at : at + length])
            del buf[: at + length]
            if opcode == 1:
                message = json.loads(payload)
                if message.get("type") == "variant":
                    self.variants.append(message)
            elif opcode == 2:
                info = frame_info(payload)
                if info and info[1] != self._last_seq:
                    self._last_seq = info[1]
                    self.frames.append((time.monotonic(), jpeg_size(payload)[0]))

    def fps(self, width: int | None = None, seconds: float = 2.0) -> float:
        now = time.monotonic()
        recent = [w for t, w in self.frames if now - t <= seconds and (width is None or w == width)]
        return len(recent) / seconds

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
@pytest.mark.alone  # a frame rate, and adaptation's timing
def test_a_client_reading_slowly_is_stepped_down_then_back_up(start_server):
    proc = start_server("--camera", "emulated", "--width", "640", "--height", "480", "--fps", "30")
    client = PacedClient(proc.port)
    client.open()
    try:
        client.rate = 100_000  # bytes/s: about 4 full frames (24 KB) a second
        client.read_for(20, until=lambda: any(v["adapted"] and v["width"] <= 320 for v in client.variants))
        assert client.variants, "the server never moved the slow client"
        down = client.variants[-1]
        assert down["adapted"] and down["width"] <= 320, client.variants
        client.read_for(4)
        # Smaller frames, and nearly all of them, where the full size got a few.
        assert max(w for _, w in client.frames[-20:]) <= 320
        assert client.fps(seconds=3) >= 18, client.fps(seconds=3)
        client.rate = None  # the link is fast again
        client.read_for(60, until=lambda: client.variants[-1]["width"] == 640)
        up = client.variants[-1]
        assert up["width"] == 640 and up["adapted"] is False, client.variants
        client.read_for(1)
        assert client.frames[-1][1] == 640
    finally:
        client.close()
    with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
        status = json.load(response)
    assert status["variants"]["adapt_steps"]["down"] >= 1 and status["variants"]["adapt_steps"]["up"] >= 1


@pytest.mark.slow
def test_an_mjpeg_viewer_adapts_only_when_it_asks(start_server):
    proc = start_server("--camera", "emulated", "--width", "640", "--height", "480", "--fps", "30")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    slow.connect(("127.0.0.1", proc.port))
    slow.sendall(b"GET /stream.mjpg?adapt=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    fixed = socket.socket()
    fixed.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    fixed.connect(("127.0.0.1", proc.port))
    fixed.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        started = time.monotonic()
        taken = {slow: 0, fixed: 0}
        clients: list[dict] = []
        next_look = started
        while time.monotonic() - started < 25:
            for sock in (slow, fixed):  # each read at most 60 KB/s: a slow link (24 KB frames)
                allowed = 60_000 * (time.monotonic() - started) - taken[sock]
                if allowed >= 2048:
                    sock.settimeout(0.01)
                    with contextlib.suppress(TimeoutError):
                        taken[sock] += len(sock.recv(2048))
            time.sleep(0.005)  # pacing the reads
            if time.monotonic() >= next_look:
                next_look += 0.5
                with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
                    clients = json.load(response)["clients"]
                if any(c["adapt"] and c["adapted"] for c in clients):
                    break
        by_adapt = {c["adapt"]: c for c in clients}
        assert by_adapt[True]["adapted"] and by_adapt[True]["width"] < 640, json.dumps(clients)
        assert by_adapt[False]["variant"] == "source" and not by_adapt[False]["adapted"], clients
    finally:
        slow.close()
        fixed.close()


def test_a_bad_max_variants_is_one_line_and_status_2():
    from tests.conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("--max-variants", "50"), "--max-variants")


def test_max_variants_in_a_config_file(tmp_path: Path):
    config = tmp_path / "cameras.toml"
    config.write_text('[cameras.door]\ndriver = "emulated"\nmax_variants = 2\n')
    settings = server.parse_settings(["--config", str(config)], env={})
    assert settings.cameras[0].max_variants == 2
    try:
        server.parse_settings(["--max-variants", "-1"], env={})
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--max-variants -1 accepted")


# -- the encoders -----------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["opencv", "pillow"])
@pytest.mark.parametrize(
    ("size", "scale", "expected"), [((640, 480), 2, (320, 240)), ((642, 482), 4, (161, 121))]
)
def test_both_encoders_reduce_as_a_jpeg_decoder_does(codec, size, scale, expected):
    from outputs import variants

    source = jpeg((40, 120, 200), size)
    if codec == "opencv":
        assert variants._opencv() is not None, "OpenCV is a test dependency"
        encode = variants.encode_variant
    else:
        encode = variants._encode_pillow
    data, width, height = encode(source, scale, 50)
    assert (width, height) == expected == picture(data).size == variants.VariantKey(scale).size(*size)
    assert max(abs(a - b) for a, b in zip(picture(data).getpixel((5, 5)), (40, 120, 200), strict=True)) < 8
    with pytest.raises(ValueError, match="not a JPEG"):
        encode(b"\xff\xd8 not really", scale, 50)


@pytest.mark.gen_test(timeout=30)
async def test_viewers_of_variants_count_towards_max_clients(port, feed, app):
    app.settings["client_limit"].max_clients = 2
    small = await connect(port, "?width=320&adapt=0")
    full = await connect(port, "?adapt=0")
    await binary(small)
    await binary(full)
    assert feed.viewer_count == 2 and feed.subscriber_count == 1
    with pytest.raises(HTTPClientError) as refused:
        await connect(port, "?width=160&adapt=0")
    assert refused.value.code == 503
    small.close()
    full.close()


@pytest.mark.slow
def test_a_width_asked_of_a_cold_camera_snaps_to_its_real_size(start_server, tmp_path):
    from harness.colours import write_colour_frames

    # Configured at 640x480 (the default), the files are 96x72: ?width=40 is 48 wide
    # (96 / 2), not 80 (640 / 8) nor 12 (96 / 8).
    folder = write_colour_frames(tmp_path / "small", size=(96, 72))
    proc = start_server("--camera", "files", "--source", str(folder), "--fps", "30", "--idle-timeout", "1")
    with urllib.request.urlopen(proc.url + "snapshot.jpg?width=40", timeout=10) as response:
        assert picture(response.read()).size == (48, 36)

    def cold() -> bool:
        with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
            body = json.load(response)
        return not body["running"] and not any(v["running"] for v in body["variants"]["sizes"].values())

    deadline = time.monotonic() + 15
    while not cold():
        assert time.monotonic() < deadline, "the camera did not idle out"
        time.sleep(0.1)  # polling with a deadline

    async def watch() -> None:
        ws = await connect(proc.port, "?width=40&adapt=0")
        deadline = time.monotonic() + 10
        while jpeg_size(await binary(ws)) != (48, 36):
            assert time.monotonic() < deadline, "never 48x36"
        ws.close()

    run_private(watch())
