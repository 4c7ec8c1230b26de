"""The mjpeg camera (cameras/mjpeg.py): JPEG sizes, the multipart parser, URLs, and
relaying real MJPEG upstreams: this server, and a scripted one of our own."""

from __future__ import annotations

import base64
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cameras import CameraConfig, create_camera
from cameras.relay import MultipartParser, Part, RelayCamera, parse_source
from feed import FrameFeed
from frame import CameraError
from handlers.metrics import make_registry
from harness.colours import jpeg
from tests.camera_polling import live_frames, wait_for
from tests.conftest import ROOT
from tests.mjpeg_client import StreamReader
from tests.sources import ScriptedUpstream, ok_head


def feed_in_chunks(parser: MultipartParser, data: bytes, sizes: Iterator[int]) -> list[Part]:
    parts: list[Part] = []
    pos = 0
    while pos < len(data):
        step = next(sizes)
        parts += parser.feed(data[pos : pos + step])
        pos += step
    return parts


def chunkings() -> list[Callable[[], Iterator[int]]]:
    """Whole, byte by byte, and random cuts (seeded, so a failure repeats)."""

    def whole() -> Iterator[int]:
        while True:
            yield 1 << 30

    def bytewise() -> Iterator[int]:
        while True:
            yield 1

    def jagged() -> Iterator[int]:
        rng = random.Random(4)
        while True:
            yield rng.randint(1, 97)

    return [whole, bytewise, jagged]


# -- the parser -----------------------------------------------------------------
JPEGS = [jpeg((255, 0, 0)), jpeg((0, 255, 0)), jpeg((0, 0, 255))]


def length_stream(bodies: list[bytes]) -> bytes:
    """Framed as this server's default: boundary, Content-Length, CRLF after the data."""
    out = b"preamble to ignore\r\n"
    for body in bodies:
        out += b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(body), body)
    return out


@pytest.mark.parametrize("chunking", chunkings(), ids=["whole", "bytewise", "jagged"])
def test_parser_uses_content_length(chunking):
    # The second body contains the boundary line: only Content-Length can frame it.
    bodies = [JPEGS[0], b"\xff\xd8 data\r\n--frame\r\nmore\xff\xd9", JPEGS[2]]
    parts = feed_in_chunks(MultipartParser("frame"), length_stream(bodies), chunking())
    assert [p.body for p in parts] == bodies
    assert parts[0].headers == {"content-type": "image/jpeg", "content-length": str(len(bodies[0]))}


def test_a_part_with_content_length_is_complete_without_waiting_for_the_next_boundary():
    parser = MultipartParser("frame")
    head = b"--frame\r\nContent-Length: %d\r\n\r\n" % len(JPEGS[0])
    assert parser.feed(head + JPEGS[0][:-1]) == []
    assert [p.body for p in parser.feed(JPEGS[0][-1:])] == [JPEGS[0]]


def test_parser_skips_the_leftovers_of_a_wrong_content_length():
    stream = (
        b"--frame\r\nContent-Length: 4\r\n\r\nabcdEXTRA JUNK\r\n--frame\r\nContent-Length: 2\r\n\r\nok\r\n"
    )
    parser = MultipartParser("frame")
    assert [p.body for p in parser.feed(stream)] == [b"abcd", b"ok"]
    assert parser.skipped_bytes == len(b"EXTRA JUNK\r\n")


def boundary_stream(line: bytes, bodies: list[bytes], eol: bytes) -> bytes:
    """Parts without Content-Length, ended by the next boundary line."""
    out = b""
    for body in bodies:
        out += line + eol + b"Content-Type: image/jpeg" + eol + eol + body + eol
    return out + line + eol


@pytest.mark.parametrize("chunking", chunkings(), ids=["whole", "bytewise", "jagged"])
@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize(
    ("param", "line"),
    [
        ("frame", b"--frame"),
        ("--myboundary", b"--myboundary"),
        ('"quoted"', b"--quoted"),
        (None, b"--learned"),
    ],
    ids=["plain", "dashes-in-param", "quoted", "no-param"],
)
def test_parser_splits_by_boundary(param, line, eol, chunking):
    # Near misses inside a body must not end it.
    tricky = b"\xff\xd8" + eol + line + b"X" + eol + b"x" + line + eol + line[:-1] + eol + b"\xff\xd9"
    bodies = [JPEGS[0], tricky, JPEGS[1]]
    parts = feed_in_chunks(MultipartParser(param), boundary_stream(line, bodies, eol), chunking())
    assert [p.body for p in parts] == bodies
    assert all(p.headers == {"content-type": "image/jpeg"} for p in parts)


@pytest.mark.parametrize("chunking", chunkings(), ids=["whole", "bytewise", "jagged"])
def test_parser_reads_the_img_framing_of_this_server(chunking):
    """Each JPEG followed at once by the next part's header block, no Content-Length."""
    head = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
    stream = head + b"".join(body + b"\r\n" + head for body in JPEGS)
    parts = feed_in_chunks(MultipartParser("frame"), stream, chunking())
    assert [p.body for p in parts] == JPEGS


def test_parser_takes_a_jpeg_right_after_the_boundary_line():
    parser = MultipartParser("b")
    assert [p.body for p in parser.feed(b"--b\r\n" + JPEGS[0] + b"\r\n--b\r\n")] == [JPEGS[0]]


def test_parser_bounds_its_memory():
    with pytest.raises(CameraError, match="header block is over 16384 bytes"):
        MultipartParser("frame").feed(b"--frame\r\nX-Junk: " + b"a" * 20000)
    with pytest.raises(CameraError, match="header block is over 16384 bytes"):
        MultipartParser("frame").feed(b"--frame\r\n" + b"X-Junk: aaaa\r\n" * 2000)
    cap = r"the 8 MB cap \(--relay-max-part\)"
    with pytest.raises(CameraError, match=rf"^a part of 20 MB is over {cap}$"):
        MultipartParser("frame").feed(b"--frame\r\nContent-Length: 20000000\r\n\r\n")
    small = MultipartParser("frame", max_part_bytes=1000)
    small.feed(b"--frame\r\n\r\n" + b"x" * 900)
    with pytest.raises(CameraError, match=r"^a part is over the 1 KB cap \(--relay-max-part\)$"):
        small.feed(b"x" * 200)
    with pytest.raises(
        CameraError, match=r"^no multipart boundary in 1 KB of the stream \(--relay-max-part\)$"
    ):
        MultipartParser("frame", max_part_bytes=1000).feed(b"junk line\n" * 200)
    with pytest.raises(CameraError, match="no multipart boundary"):
        MultipartParser("frame", max_part_bytes=1000).feed(b"x" * 1500)
    # At the default cap: a part just under it is taken, one byte more is refused.
    body = b"\xff\xd8" + b"x" * (8_000_000 - 4) + b"\xff\xd9"
    parts = MultipartParser("frame").feed(b"--frame\r\n\r\n" + body + b"\r\n--frame\r\n")
    assert [len(p.body) for p in parts] == [8_000_000]
    with pytest.raises(CameraError, match=rf"^a part of 8000001 bytes is over {cap}$"):
        MultipartParser("frame").feed(b"--frame\r\nContent-Length: 8000001\r\n\r\n")


# -- the source URL -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "needs --source http://"),
        ("", "needs --source http://"),
        ("ftp://x", "ftp://x: the mjpeg camera needs an http:// or https:// URL"),
        ("ftp://user:secret@x/", "needs an http:// or https:// URL"),
        ("camera.local/video", "needs an http:// or https:// URL"),
        ("http://", "no host"),
        ("http://user:secret@:80/", "no host"),
        ("http://host:99999/", "not a valid URL"),
        ("http://host/a b", "spaces or control characters"),
    ],
)
def test_the_url_is_checked_when_the_camera_is_built(source, message):
    with pytest.raises(CameraError, match=message) as caught:
        create_camera("mjpeg", CameraConfig(source=source))
    assert "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


def test_credentials_in_the_url_become_basic_auth():
    up = parse_source("http://us%40er:p%3Ass@cam.local:8081/video?x=1")
    assert (up.host, up.port, up.target) == ("cam.local", 8081, "/video?x=1")
    assert up.authorization == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert up.label == "http://cam.local:8081/video?x=1"
    assert parse_source("https://[::1]/s").label == "https://[::1]:443/s"
    assert parse_source("http://cam/").authorization is None


# -- a scripted upstream of our own -----------------------------------------------------
@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedUpstream]]:
    made: list[ScriptedUpstream] = []

    def make(respond: Callable[[dict[str, str]], list[bytes]], hold: bool = True) -> ScriptedUpstream:
        upstream = ScriptedUpstream(respond, hold)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.close()


@pytest.fixture
def cameras() -> Iterator[Callable[..., RelayCamera]]:
    """``cameras(source, max_part_bytes=None, **attributes)`` builds a started camera,
    stopped after the test."""
    made: list[RelayCamera] = []

    def make(source: str, max_part_bytes: int | None = None, **attributes: float) -> RelayCamera:
        camera = RelayCamera(CameraConfig(name="relay", source=source, max_part_bytes=max_part_bytes))
        for name, value in attributes.items():
            setattr(camera, name, value)
        made.append(camera)
        camera.start()
        return camera

    yield make
    for camera in made:
        camera.stop()


def lf_parts(bodies: list[bytes]) -> bytes:
    """The dialect of some IP cameras: '--' in the boundary parameter, bare LF, no Content-Length."""
    return b"".join(b"--myboundary\nContent-Type: image/jpeg\n\n" + body + b"\n" for body in bodies) + (
        b"--myboundary\n"
    )


def camera_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "(mjpeg) camera failed" in r.getMessage()
    ]


def test_basic_auth_is_sent_and_the_newest_jpeg_is_served(scripted, cameras):
    expected = "Basic " + base64.b64encode(b"user:p@ss").decode()

    def respond(headers: dict[str, str]) -> list[bytes]:
        if headers.get("authorization") != expected:
            return [b'HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n']
        return [ok_head(), lf_parts(JPEGS)]

    upstream = scripted(respond)
    camera = cameras(upstream.url(userinfo="user:p%40ss@"))
    frame = wait_for(lambda: (f := camera.latest()) is not None and f.live and f, what="a live frame")
    assert frame.jpeg == JPEGS[-1]  # all three came in one read: only the newest is kept
    assert (frame.width, frame.height) == (64, 48)
    assert camera.online and camera.error is None
    assert upstream.requests[0]["authorization"] == expected
    assert upstream.requests[0][":path"] == "/video"


def test_a_wrong_password_is_reported_once(scripted, cameras, caplog):
    def respond(headers: dict[str, str]) -> list[bytes]:
        return [b'HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n']

    upstream = scripted(respond, hold=False)
    camera = cameras(upstream.url(userinfo="user:wrong@"), retry_initial_s=0.02, retry_max_s=0.05)
    wait_for(lambda: camera.connection_attempts >= 4, what="several attempts")
    assert not camera.online
    assert camera.error == (
        f"http://127.0.0.1:{upstream.port}/video: HTTP 401 Unauthorized"
        " (check the user and password in --source)"
    )
    assert len(camera_warnings(caplog)) == 1
    assert "wrong" not in camera.error


@pytest.mark.slow
def test_what_is_not_an_mjpeg_stream_is_named(start_server, frames_dir, cameras):
    upstream = start_server("--camera", "files", "--source", str(frames_dir))
    snapshot = cameras(upstream.url + "snapshot.jpg")
    missing = cameras(upstream.url + "nothing-here")
    wait_for(lambda: snapshot.error and missing.error, what="both errors")
    assert snapshot.error.endswith("snapshot.jpg: not an MJPEG stream (Content-Type image/jpeg)")
    assert missing.error.endswith("/nothing-here: HTTP 404 Not Found")
    assert not snapshot.online and not missing.online


def test_a_silent_upstream_is_noticed(scripted, cameras):
    upstream = scripted(lambda headers: [ok_head(), lf_parts(JPEGS[:1])])
    camera = cameras(upstream.url(), read_timeout_s=0.3, retry_initial_s=0.05, retry_max_s=0.1)
    wait_for(lambda: camera.online, what="online")
    assert camera.latest().jpeg == JPEGS[0]
    error = wait_for(lambda: camera.error, timeout_s=5, what="the silence noticed")
    assert error.endswith("/video: no data for 0.3 s")
    assert not camera.online
    wait_for(lambda: camera.connection_attempts >= 2, what="a reconnection")


def test_stop_does_not_wait_for_a_silent_upstream(scripted, cameras, caplog):
    upstream = scripted(lambda headers: [ok_head(), lf_parts(JPEGS[:1])])
    camera = cameras(upstream.url(), read_timeout_s=30)
    wait_for(lambda: camera.online, what="online")  # now blocked reading a silent socket
    started = time.monotonic()
    camera.stop()
    assert time.monotonic() - started < 1.0
    assert not camera.running
    assert camera_warnings(caplog) == []


def test_a_stream_ended_after_a_while_is_reopened_at_once(scripted, cameras, caplog):
    upstream = scripted(lambda headers: [ok_head(), lf_parts(JPEGS[:1])], hold=False)
    camera = cameras(upstream.url(), reconnect_after_s=0.0, retry_initial_s=5.0)
    wait_for(lambda: camera.connection_attempts >= 5, timeout_s=3, what="immediate reconnections")
    assert camera.error is None
    assert camera_warnings(caplog) == []


def test_a_stream_ended_at_once_is_retried_with_a_delay(scripted, cameras, caplog):
    upstream = scripted(lambda headers: [ok_head()], hold=False)
    camera = cameras(upstream.url(), retry_initial_s=0.05, retry_max_s=0.1)
    error = wait_for(lambda: camera.error, what="the stream end reported")
    assert error.endswith("/video: the upstream closed the stream")
    wait_for(lambda: camera.connection_attempts >= 3, what="retries")
    assert len(camera_warnings(caplog)) == 1


def test_only_whole_jpegs_are_relayed_and_the_rest_is_counted(scripted, cameras, caplog):
    padded = JPEGS[2] + b"\r\n"  # padding after the EOI, inside the Content-Length
    cut = JPEGS[0][:-10]  # a Content-Length too short: the JPEG without its end

    def respond(headers: dict[str, str]) -> list[bytes]:
        framed = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
        head = ok_head("multipart/x-mixed-replace;boundary=frame")
        return [head, framed % (len(cut), cut), framed % (len(padded), padded)]

    upstream = scripted(respond)
    camera = cameras(upstream.url())
    frame = wait_for(lambda: (f := camera.latest()) is not None and f.live and f, what="a live frame")
    assert frame.jpeg == JPEGS[2]  # served without the padding
    wait_for(lambda: camera.parts_dropped == 1, what="the cut part counted")
    assert camera.status()["relay"] == {
        "upstream": upstream.url(),
        "connections": 1,
        "parts_dropped": 1,
        "max_part_bytes": 8_000_000,
    }
    # ... and in /metrics.
    registry = make_registry({"door": FrameFeed(camera, name="door")})
    [family] = [
        f
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.name == "camstream_relay_parts_dropped"
    ]
    assert [(s.labels, s.value) for s in family.samples] == [({"camera": "door"}, 1)]
    dropped = [r.getMessage() for r in caplog.records if "dropped a part" in r.getMessage()]
    assert dropped == [
        f"relay (mjpeg) camera: dropped a part that is not a whole JPEG, SOI to EOI ({len(cut)} bytes, "
        f"Content-Length {len(cut)}); 1 so far (one warning a minute)"
    ]


def test_the_part_cap_is_the_cameras(scripted, cameras):
    big = b"\xff\xd8" + b"x" * 200_000 + b"\xff\xd9"

    def respond(headers: dict[str, str]) -> list[bytes]:
        return [ok_head(), b"--myboundary\nContent-Length: %d\n\n%s\n" % (len(big), big)]

    upstream = scripted(respond)
    camera = cameras(upstream.url(), max_part_bytes=100_000, retry_initial_s=5.0)
    error = wait_for(lambda: camera.error, what="the part refused")
    assert error == f"{upstream.url()}: a part of 200 KB is over the 100 KB cap (--relay-max-part)"
    with pytest.raises(CameraError, match=r"--relay-max-part 20000000: give at most 16\.8 MB"):
        RelayCamera(CameraConfig(source=upstream.url(), max_part_bytes=20_000_000))


def test_a_cold_upstream_may_take_its_time_for_the_first_frame_but_not_during_an_outage(scripted, cameras):
    def respond(headers: dict[str, str]) -> Iterator[bytes]:
        yield ok_head()
        upstream.released.wait(0.8)  # the upstream starts its camera: the fault this test makes
        yield lf_parts(JPEGS[:1])

    upstream = scripted(respond)
    camera = cameras(upstream.url(), read_timeout_s=0.3, connect_timeout_s=5.0, retry_initial_s=0.05)
    frame = wait_for(lambda: (f := camera.latest()) is not None and f.live and f, what="the first frame")
    assert frame.jpeg == JPEGS[0]
    assert camera.failures == 0 and camera.error is None  # 0.8 s for the first frame: no failure
    # Then the upstream is silent: after its first frame, the read timeout is the one that counts.
    error = wait_for(lambda: camera.error, timeout_s=5, what="the silence noticed")
    assert error.endswith("/video: no data for 0.3 s")
    # During the outage the reconnections get no grace: each fails after 0.3 s, before
    # the upstream's frame (0.8 s) comes.
    attempts, captured = camera.connection_attempts, camera.frames_captured
    wait_for(lambda: camera.connection_attempts >= attempts + 2, timeout_s=5, what="reconnections")
    assert camera.frames_captured == captured
    assert not camera.online and camera.latest().live is False


# -- this server as the upstream ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("query", ["", "?framing=img"], ids=["content-length", "boundary-only"])
def test_relays_this_server_byte_for_byte(start_server, frames_dir, cameras, query):
    originals = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    camera = cameras(upstream.url + "stream.mjpg" + query)
    frames = live_frames(camera, 8)
    for frame in frames:
        assert frame.jpeg in originals  # the upstream's bytes, not a re-encoding
        assert (frame.width, frame.height) == (160, 120)
    indexes = [originals.index(f.jpeg) for f in frames]
    assert len(set(indexes)) >= 4, "the relayed pictures move on"


@pytest.mark.slow
def test_upstream_restart_goes_offline_then_live_again(start_server, frames_dir, cameras, caplog):
    originals = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    camera = cameras(upstream.url + "stream.mjpg")
    before = live_frames(camera, 40)  # over a second of streaming
    assert camera.online

    upstream.stop()
    error = wait_for(lambda: not camera.online and camera.error, timeout_s=5, what="offline")
    assert error.endswith("/stream.mjpg: connection refused")
    # Viewers see the "no signal" picture, not a frozen frame.
    wait_for(lambda: not camera.latest().live, timeout_s=5, what="a no-signal picture")
    attempts = camera.connection_attempts
    wait_for(lambda: camera.connection_attempts >= attempts + 2, timeout_s=10, what="retries")

    upstream.start()
    restarted = time.monotonic()
    after = live_frames(camera, 5, timeout_s=15, after_seq=before[-1].seq)
    waited_s = time.monotonic() - restarted
    assert camera.online and camera.error is None
    assert all(f.jpeg in originals for f in after)
    assert waited_s < camera.retry_max_s + 3
    # One warning for the whole outage, however many retries it took.
    assert len(camera_warnings(caplog)) == 1
    assert any("back online" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_relay_server_serves_the_upstream_jpegs(start_server, frames_dir):
    originals = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    relay = start_server("--camera", "mjpeg", "--source", upstream.url + "stream.mjpg")
    reader = StreamReader(relay.port)
    try:
        parts = reader.wait_for(6, timeout_s=15)
    finally:
        reader.close()
    assert all(p.body in originals for p in parts)
    assert len({p.body for p in parts}) >= 3


# -- the command line ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "message"),
    [("ftp://x", "ftp://x: the mjpeg camera needs an http:// or https:// URL"), ("", "needs --source")],
)
def test_cli_refuses_a_bad_url_with_one_line(source: str, message: str, tmp_path: Path):
    args = ["--camera", "mjpeg", "--port", "0"] + (["--source", source] if source else [])
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CAMSTREAM_", "CAMERA"))},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
