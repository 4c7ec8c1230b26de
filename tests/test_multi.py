"""Several cameras in one server: settings, URLs, status, isolation of a failing camera.

The in-process server runs three files cameras, each a folder of one solid
colour (so a picture tells which camera sent it), and in one test a fourth
camera whose network source does not exist.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
import tornado.websocket
from PIL import Image
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

import server
from cameras.base import CameraConfig
from feed import FrameFeed
from harness.colours import COLOURS, jpeg, nearest_colour
from settings import CameraSpec
from tests.conftest import assert_one_line_error, run_cli
from tests.mjpeg_client import open_stream, read_parts

#: Camera name -> index in COLOURS of its one colour.
CAMERAS = {"red": 0, "green": 1, "blue": 2}


def colour_folder(folder: Path, colour: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> Path:
    """Two frames of ``colour``, a shade apart (the same colour to :func:`colour_of`):
    the feed sends a picture identical to the last one only as its once-a-second
    keep-alive, so two equal files would stream at 1 fps, not at the camera's rate."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        shade = tuple(c - 8 * i if c > 127 else c + 8 * i for c in colour)
        (folder / f"{i}.jpg").write_bytes(jpeg(shade, size))  # type: ignore[arg-type]
    return folder


def spec(name: str, driver: str, source: str | None, fps: float = 30) -> CameraSpec:
    return CameraSpec(name, driver, CameraConfig(name=name, source=source, fps=fps))


@pytest.fixture
def settings(tmp_path: Path) -> server.Settings:
    cameras = tuple(
        spec(name, "files", str(colour_folder(tmp_path / name, COLOURS[index])))
        for name, index in CAMERAS.items()
    )
    return server.Settings(cameras=cameras, idle_timeout_s=10)


@pytest.fixture
def feeds(settings: server.Settings) -> Iterator[dict[str, FrameFeed]]:
    feeds = server.make_feeds(settings)
    yield feeds
    for feed in feeds.values():
        feed.close()


@pytest.fixture
def app(settings: server.Settings, feeds: dict[str, FrameFeed]):
    return server.make_app(settings, feeds)


def colour_of(data: bytes) -> int:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return nearest_colour(image.getpixel((image.width // 2, image.height // 2)))


async def ws_frames(port: int, path: str, count: int) -> tuple[dict, list[bytes]]:
    request = HTTPRequest(f"ws://127.0.0.1:{port}{path}", request_timeout=5)
    ws = await asyncio.wait_for(tornado.websocket.websocket_connect(request), 5)
    try:
        await ws.write_message("{}")  # asks for the hello
        hello: dict = {}
        frames: list[bytes] = []
        while len(frames) < count or not hello:
            message = await asyncio.wait_for(ws.read_message(), 5)
            assert message is not None, "the socket closed"
            if isinstance(message, bytes):
                frames.append(message)
            elif not hello:
                hello = json.loads(message)
        return hello, frames
    finally:
        ws.close()


# -- settings -------------------------------------------------------------------
def test_repeated_camera_options(tmp_path):
    settings = server.parse_settings(
        ["--camera", "door=files:/srv/door", "--camera", "yard=emulated", "--fps", "12"], env={}
    )
    assert [(s.name, s.driver, s.config.source) for s in settings.cameras] == [
        ("door", "files", "/srv/door"),
        ("yard", "emulated", None),
    ]
    assert all(s.config.fps == 12 for s in settings.cameras)
    # --camera wins over $CAMERA; the unnamed form is named after its driver.
    settings = server.parse_settings(["--camera", "emulated"], env={"CAMERA": "files"})
    assert [(s.name, s.driver) for s in settings.cameras] == [("emulated", "emulated")]


def test_config_file_then_camera_options(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.porch]\ndriver = "emulated"\nfps = 5\n\n[cameras.shed]\ndriver = "emulated"\n')
    settings = server.parse_settings(["--config", str(path), "--camera", "gate=emulated"], env={})
    assert [(s.name, s.config.fps) for s in settings.cameras] == [
        ("porch", 5),
        ("shed", 30),
        ("gate", 30),
    ]
    settings = server.parse_settings([], env={"CAMSTREAM_CONFIG": str(path)})
    assert [s.name for s in settings.cameras] == ["porch", "shed"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--camera", "a=emulated", "--camera", "a=emulated"], "two cameras are named 'a'"),
        (["--camera", "a=emulated", "--camera", "b=webcam"], "unknown camera driver 'webcam'"),
        (["--camera", "Big Door=emulated"], "camera name 'Big Door'"),
        (
            ["--camera", "a=emulated", "--camera", "b=files:/nonexistent"],
            "camera 'b': --camera b=files:/nonexistent: source /nonexistent: not a folder",
        ),
        (["--config", "/nonexistent.toml"], "--config /nonexistent.toml"),
    ],
)
def test_bad_cameras_exit_2_with_one_line(args, message):
    assert_one_line_error(run_cli(*args), message)


@pytest.mark.slow
def test_a_bad_config_file_names_the_camera(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.porch]\ndriver = "emulated"\nfps = 500\n')
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == "server.py: error: camera 'porch': fps 500 is out of range (0.01-120)"


# -- URLs -----------------------------------------------------------------------
@pytest.mark.gen_test(timeout=30)
async def test_each_camera_has_its_own_urls(http_client, base_url, port):
    for name, index in CAMERAS.items():
        response = await http_client.fetch(f"{base_url}/cameras/{name}/snapshot.jpg")
        assert colour_of(response.body) == index, name
        stream, head, parser = await open_stream(port, f"/cameras/{name}/stream.mjpg")
        assert head.status == 200
        parts = await read_parts(stream, parser, 3)
        stream.close()
        assert {colour_of(part.body) for part in parts} == {index}, name
        hello, frames = await ws_frames(port, f"/cameras/{name}/ws", 3)
        assert hello["camera"] == name
        assert {colour_of(frame) for frame in frames} == {index}, name
    # The first camera also answers at the short URLs.
    response = await http_client.fetch(base_url + "/snapshot.jpg")
    assert colour_of(response.body) == CAMERAS["red"]
    hello, frames = await ws_frames(port, "/ws", 2)
    assert hello["camera"] == "red" and colour_of(frames[-1]) == CAMERAS["red"]


@pytest.mark.gen_test(timeout=30)
async def test_each_camera_starts_and_idles_on_its_own(http_client, base_url, port, feeds):
    stream, _head, parser = await open_stream(port, "/cameras/green/stream.mjpg")
    await read_parts(stream, parser, 2)
    assert feeds["green"].camera.running
    assert not feeds["red"].camera.running and not feeds["blue"].camera.running
    body = json.loads((await http_client.fetch(base_url + "/status")).body)
    assert body["cameras"]["green"]["subscribers"] == 1
    assert body["cameras"]["red"]["subscribers"] == 0
    stream.close()


@pytest.mark.gen_test(timeout=30)
async def test_status_covers_every_camera(http_client, base_url):
    body = json.loads((await http_client.fetch(base_url + "/status")).body)
    assert list(body["cameras"]) == list(CAMERAS)
    assert body["name"] == "red"  # the first camera's fields stay at the top level
    assert all(item["driver"] == "files" for item in body["cameras"].values())
    assert body["version"] and body["uptime_s"] >= 0
    one = json.loads((await http_client.fetch(base_url + "/cameras/blue/status")).body)
    assert one["name"] == "blue" and "cameras" not in one and one["version"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/cameras/green", "green/"),
        ("/cameras/green?x=1", "green/?x=1"),
        ("/cameras", "cameras/"),
        ("/cameras/green/viewer/", "../viewer"),
    ],
)
async def test_camera_folders_redirect_relatively(http_client, base_url, path, location):
    for method in ("GET", "HEAD"):
        response = await http_client.fetch(
            base_url + path, method=method, follow_redirects=False, raise_error=False
        )
        assert response.code == 301
        assert response.headers["Location"] == location


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "path",
    [
        "/cameras/nosuch/",
        "/cameras/nosuch/stream.mjpg",
        "/cameras/red/nope",
        "/cameras/red/static/missing.css",
        "/cameras/red/static/../../server.py",
        "/cameras/..%2fserver.py",
    ],
)
async def test_unknown_camera_paths_are_short_404s(http_client, base_url, path):
    response = await http_client.fetch(base_url + path, raise_error=False)
    assert response.code in (403, 404)
    assert len(response.body) < 100 and b"Traceback" not in response.body


@pytest.mark.gen_test(timeout=30)
async def test_the_camera_list(http_client, base_url):
    for path, root in (("/", ""), ("/cameras/", "../")):
        response = await http_client.fetch(base_url + path)
        assert response.headers["Content-Type"].startswith("text/html")
        body = response.body.decode()
        assert re.findall(r'data-camera="([^"]+)"', body) == list(CAMERAS)
        for name in CAMERAS:
            assert f'data-base="{root}cameras/{name}/"' in body
            assert f'<noscript><img src="{root}cameras/{name}/snapshot.jpg?width=320"' in body
        assert f'src="{root}static/cameras.js"' in body
        assert not re.findall(r'(?:src|href)="/', body)  # relative URLs only
        head = await http_client.fetch(base_url + path, method="HEAD")
        assert head.code == 200 and head.body == b""
    # Every URL of the page resolves.
    for url in re.findall(r'(?:src|href)="([^"]+)"', body):
        if url.startswith("data:"):
            continue
        target = urljoin(base_url + "/cameras/", url)
        response = await http_client.fetch(target, method="HEAD", raise_error=False)
        assert response.code == 200, target


@pytest.mark.gen_test(timeout=30)
async def test_camera_pages_name_the_camera_and_link_to_the_list(http_client, base_url):
    for page in ("", "viewer", "kiosk"):
        body = (await http_client.fetch(f"{base_url}/cameras/green/{page}")).body.decode()
        assert "<title>green:" in body
        if page != "kiosk":
            assert '<a href="../">all cameras</a>' in body
    response = await http_client.fetch(base_url + "/cameras/green/static/style.css")
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/css")


# -- a failing camera among working ones -----------------------------------------
@pytest.fixture
def dead_port() -> int:
    """A loopback port nobody listens on (bound, never listening: connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    yield port
    sock.close()


@pytest.mark.gen_test(timeout=40)
async def test_a_failing_camera_does_not_affect_the_others(tmp_path, dead_port):
    settings = server.Settings(
        cameras=(
            spec("red", "files", str(colour_folder(tmp_path / "red", COLOURS[0]))),
            spec("gone", "mjpeg", f"http://127.0.0.1:{dead_port}/stream.mjpg"),
        ),
    )
    feeds = server.make_feeds(settings)
    sock, port = bind_unused_port()
    http = HTTPServer(server.make_app(settings, feeds))
    http.add_sockets([sock])
    try:
        gone_stream, _head, gone_parser = await open_stream(port, "/cameras/gone/stream.mjpg")
        red_stream, _head, red_parser = await open_stream(port, "/cameras/red/stream.mjpg")
        # The failing camera shows viewers a "no signal" picture, not nothing.
        gone = await read_parts(gone_stream, gone_parser, 1)
        picture = Image.open(io.BytesIO(gone[0].body))
        assert picture.format == "JPEG"
        # The working one streams its own frames all the while.
        parts = await read_parts(red_stream, red_parser, 30)
        assert {colour_of(part.body) for part in parts} == {0}
        deadline = time.monotonic() + 10
        while True:
            body = json.loads((await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/status")).body)
            if body["cameras"]["gone"]["error"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert body["cameras"]["gone"]["online"] is False
        assert "127.0.0.1" in body["cameras"]["gone"]["error"]
        assert body["cameras"]["red"]["online"] is True
        gone_stream.close()
        red_stream.close()
    finally:
        http.stop()
        for feed in feeds.values():
            feed.close()


# -- a real server process --------------------------------------------------------
@pytest.mark.slow
def test_a_server_process_with_a_config_file(start_server, tmp_path):
    path = tmp_path / "cameras.toml"
    lines = []
    for name, index in CAMERAS.items():
        folder = colour_folder(tmp_path / name, COLOURS[index], (96, 64))
        lines += [f"[cameras.{name}]", 'driver = "files"', f'source = "{folder}"', "fps = 10", ""]
    path.write_text("\n".join(lines))
    proc = start_server("--config", str(path))
    code, _headers, body = proc.get("/status")
    assert code == 200 and list(json.loads(body)["cameras"]) == list(CAMERAS)
    for name, index in CAMERAS.items():
        code, _headers, body = proc.get(f"/cameras/{name}/snapshot.jpg")
        assert code == 200 and colour_of(body) == index
        assert Image.open(io.BytesIO(body)).size == (96, 64)
    assert "serving 3 cameras on http://127.0.0.1:" in proc.log_text()
    assert proc.stop() == 0
