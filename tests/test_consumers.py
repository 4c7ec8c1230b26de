"""Consumers as they are in the wild, against a real server process.

* A browser front end of another origin reading the stream with ``fetch()``, as
  3D-printer and dashboard front ends do: the body read as a stream, parts split
  by Content-Length, each JPEG drawn on a canvas; real Chromium, real CORS
  (``--allow-origin``), and a preflight when it sends an ``Authorization`` header.
* A home-automation style client that sends Basic credentials only after a 401.
* ffmpeg (ffprobe, decoding, ``-c copy`` recording, Basic credentials in the URL)
  and OpenCV's ``cv2.VideoCapture``, as real processes and the real library.
"""

from __future__ import annotations

import http.server
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from harness.colours import COLOURS, jpeg, nearest_colour, write_colour_frames
from harness.process import ServerProcess

pytestmark = pytest.mark.slow

TOKEN = "front-end-token-1234"

CONSUMER = """<!DOCTYPE html>
<html><body><canvas id="c" width="160" height="120"></canvas>
<script>
window.result = { frames: 0, stamps: [], error: null };
async function run(url, headers) {
  try {
    const response = await fetch(url, { headers, mode: "cors" });
    const reader = response.body.getReader();
    let buffer = new Uint8Array(0);
    const context = document.getElementById("c").getContext("2d");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer); joined.set(value, buffer.length); buffer = joined;
      for (;;) {
        const text = new TextDecoder("latin1").decode(buffer.subarray(0, Math.min(buffer.length, 512)));
        const end = text.indexOf("\\r\\n\\r\\n");
        if (end < 0) break;
        const length = Number((/Content-Length: *(\\d+)/i.exec(text.slice(0, end)) || [])[1]);
        const stamp = (/X-Timestamp: *([0-9.]+)/i.exec(text.slice(0, end)) || [])[1];
        if (!length || buffer.length < end + 4 + length + 2) break;
        const jpeg = buffer.slice(end + 4, end + 4 + length);
        buffer = buffer.slice(end + 4 + length + 2);
        const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
        context.drawImage(bitmap, 0, 0);
        bitmap.close();
        window.result.frames += 1;
        window.result.stamps.push(stamp);
      }
    }
  } catch (err) {
    window.result.error = String(err);
  }
}
</script></body></html>
"""


@pytest.fixture
def front_end() -> Iterator[str]:
    """Another origin: a page of its own on another loopback port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = CONSUMER.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CENTRE = "() => Array.from(document.getElementById('c').getContext('2d').getImageData(80, 60, 1, 1).data)"


def drew_a_camera_colour(page) -> bool:
    """The canvas centre shows one of the camera's colours (not blank, not garbage)."""
    rgb = page.evaluate(CENTRE)[:3]
    colour = COLOURS[nearest_colour(tuple(rgb))]
    return all(abs(a - b) < 40 for a, b in zip(rgb, colour, strict=True))


@pytest.mark.parametrize("with_token", [False, True])
def test_a_fetch_front_end_of_another_origin_draws_the_stream(
    start_server, frames_dir, front_end, page, with_token
):
    args = ["--camera", "files", "--source", str(frames_dir), "--allow-origin", front_end]
    if with_token:
        args += ["--token", TOKEN]
    camera = start_server(*args)
    page.goto(front_end + "/")
    headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
    page.evaluate("([url, headers]) => { run(url, headers); }", [camera.url + "stream.mjpg", headers])
    page.wait_for_function("() => window.result.frames >= 10 || window.result.error", timeout=15000)
    result = page.evaluate("() => window.result")
    assert result["error"] is None, result["error"]
    assert len(set(result["stamps"])) == len(result["stamps"])  # every frame new
    assert drew_a_camera_colour(page)


def test_a_front_end_of_an_origin_not_allowed_is_refused_by_the_browser(
    start_server, frames_dir, front_end, page
):
    camera = start_server("--camera", "files", "--source", str(frames_dir))  # no --allow-origin
    page.goto(front_end + "/")
    page.evaluate("(url) => { run(url, {}); }", camera.url + "stream.mjpg")
    page.wait_for_function("() => window.result.frames > 0 || window.result.error", timeout=15000)
    result = page.evaluate("() => window.result")
    # A CORS refusal is a TypeError in every engine (its text is each engine's own:
    # "Failed to fetch", "NetworkError when attempting to fetch resource.", "Load failed").
    assert result["frames"] == 0 and result["error"].startswith("TypeError"), result["error"]


def test_a_home_automation_client_sends_credentials_after_the_challenge(start_server, frames_dir):
    # urllib's Basic handler, like many home-automation clients, sends credentials
    # only after a 401 that names the realm: it must work against the snapshot and stream.
    import urllib.request

    camera = start_server("--camera", "files", "--source", str(frames_dir), "--auth", "ha:secret-pw")
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, camera.url, "ha", "secret-pw")
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))
    with opener.open(camera.url + "snapshot.jpg", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
        assert response.read().startswith(b"\xff\xd8")
    with opener.open(camera.url + "stream.mjpg", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert b"\xff\xd8" in response.read(4096)


# -- ffmpeg and OpenCV, the usual programs that read a camera's MJPEG URL -----------
# One server process for these tests (module scope keeps the run short): camera
# "colours" (the first, so the short URLs are its own) cycles the six COLOURS at
# 320x240 and 20 fps; camera "greys" alternates two greys at 256x144 and 8 fps, so a
# picture and its size tell which camera sent it, and its rate tells a recording
# kept in real time from one stamped at ffmpeg's assumed 25 fps.  A second process
# asks for Basic credentials.  Every tool runs as a real process, bounded by a timeout,
# and stops by itself (-frames:v, -t).
SIZE = (320, 240)
FPS = 20
GREYS = [(64, 64, 64), (192, 192, 192)]
GREYS_SIZE = (256, 144)
GREYS_FPS = 8
FF_USER, FF_PASSWORD = "ffmpeg", "secret-pw"
TOOL_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/test.sh, which installs Debian's ffmpeg")
    return shutil.which("ffmpeg")  # type: ignore[return-value]


def module_server(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[ServerProcess]:
    logs = tmp_path_factory.mktemp("server")
    proc = ServerProcess(list(args), logs / "server").start()
    try:
        yield proc
    finally:
        proc.stop()
        text = proc.log_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text


@pytest.fixture(scope="module")
def cameras_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cameras")
    colours = write_colour_frames(root / "colours", SIZE)
    greys = root / "greys"
    greys.mkdir()
    for i, grey in enumerate(GREYS):
        (greys / f"{i}.jpg").write_bytes(jpeg(grey, GREYS_SIZE))
    config = root / "cameras.toml"
    config.write_text(
        f'[cameras.colours]\ndriver = "files"\nsource = "{colours}"\nfps = {FPS}\n\n'
        f'[cameras.greys]\ndriver = "files"\nsource = "{greys}"\nfps = {GREYS_FPS}\n'
    )
    yield from module_server(tmp_path_factory, "--config", str(config))


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    frames = write_colour_frames(tmp_path_factory.mktemp("auth") / "frames", SIZE)
    auth = f"{FF_USER}:{FF_PASSWORD}"
    yield from module_server(
        tmp_path_factory, "--camera", "files", "--source", str(frames), "--fps", str(FPS), "--auth", auth
    )


def run_tool(*args: str) -> subprocess.CompletedProcess[bytes]:
    """A command to its end; killed (and the test failed) after TOOL_TIMEOUT_S."""
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT_S)


def palette_index(pixels: list[tuple[int, ...]], palette: list[tuple[int, int, int]]) -> int:
    """The palette colour every one of ``pixels`` (RGB) shows; fails if they disagree."""
    index = min(
        range(len(palette)),
        key=lambda i: sum((a - b) ** 2 for a, b in zip(palette[i], pixels[0], strict=True)),
    )
    for pixel in pixels:
        assert all(abs(a - b) <= 24 for a, b in zip(pixel, palette[index], strict=True)), (pixel, palette)
    return index


def sample_points(width: int, height: int) -> list[tuple[int, int]]:
    """The centre and four points near the corners: a torn or half-decoded frame shows."""
    return [(width // 2, height // 2)] + [(x * width // 8, y * height // 8) for x in (1, 7) for y in (1, 7)]


def image_colour(image: Image.Image, palette: list[tuple[int, int, int]]) -> int:
    return palette_index([image.getpixel(point) for point in sample_points(*image.size)], palette)


def assert_camera_frames(indices: list[int], palette: list[tuple[int, int, int]]) -> None:
    """Every colour of the camera came, and each frame is a new one (never the one before)."""
    assert set(indices) == set(range(len(palette))), indices
    assert all(a != b for a, b in itertools.pairwise(indices)), indices


def ffmpeg_frames(ffmpeg: str, url: str, count: int, size: tuple[int, int]) -> list[Image.Image]:
    """``ffmpeg -i URL -frames:v COUNT`` decoded to raw RGB on a pipe, as Pillow images."""
    # -fps_mode passthrough: each decoded frame once, as it came (ffmpeg's default for
    # rawvideo may repeat one to fill a gap in the timestamps: that is not the server's).
    result = run_tool(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-i", url, "-fps_mode", "passthrough",
        "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    frame_bytes = size[0] * size[1] * 3
    assert len(result.stdout) == count * frame_bytes, (len(result.stdout), size)  # count frames of size
    chunks = [result.stdout[i : i + frame_bytes] for i in range(0, len(result.stdout), frame_bytes)]
    return [Image.frombytes("RGB", size, chunk) for chunk in chunks]


def ffprobe_json(*args: str) -> dict:
    result = run_tool("ffprobe", "-v", "error", "-of", "json", *args)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def test_ffprobe_recognises_the_stream_as_multipart_jpeg(ffmpeg, cameras_server):
    probe = ffprobe_json(
        "-show_entries",
        "format=format_name:stream=codec_name,width,height",
        cameras_server.url + "stream.mjpg",
    )
    # ffmpeg's multipart JPEG demuxer (ffmpeg picks it by probing the body, not by the Content-Type).
    assert probe["format"]["format_name"] == "mpjpeg"
    assert [(s["codec_name"], s["width"], s["height"]) for s in probe["streams"]] == [("mjpeg", *SIZE)]


@pytest.mark.parametrize("path", ["stream.mjpg", "?action=stream"])
def test_ffmpeg_decodes_the_cameras_frames(ffmpeg, cameras_server, path):
    frames = ffmpeg_frames(ffmpeg, cameras_server.url + path, 20, SIZE)
    assert_camera_frames([image_colour(frame, COLOURS) for frame in frames], COLOURS)


def test_ffmpeg_reads_a_named_camera(ffmpeg, cameras_server):
    frames = ffmpeg_frames(ffmpeg, cameras_server.url + "cameras/greys/stream.mjpg", 8, GREYS_SIZE)
    assert_camera_frames([image_colour(frame, GREYS) for frame in frames], GREYS)


# Alone: on a starved machine the camera can miss a second, and the server then
# repeats its still picture (the keep-alive), which reads here as a duplicate.
@pytest.mark.alone
def test_ffmpeg_records_the_stream_without_reencoding(ffmpeg, cameras_server, tmp_path):
    out = tmp_path / "out.mkv"
    result = run_tool(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-i", cameras_server.url + "stream.mjpg",
        "-t", "2", "-c", "copy", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    probe = ffprobe_json("-count_frames", "-show_streams", str(out))
    [stream] = probe["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", *SIZE)
    count = int(stream["nb_read_frames"])
    assert count >= 20, count
    # The recorded JPEGs are the camera's: decode them back.
    frames = ffmpeg_frames(ffmpeg, str(out), count, SIZE)
    assert_camera_frames([image_colour(frame, COLOURS) for frame in frames], COLOURS)


def test_ffmpeg_records_in_real_time_with_wallclock_timestamps(ffmpeg, cameras_server, tmp_path):
    # ffmpeg's multipart demuxer stamps frames at an assumed 25 fps; with
    # -use_wallclock_as_timestamps 1 the 8 fps camera's recording keeps its real rate.
    out = tmp_path / "out.mkv"
    result = run_tool(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-use_wallclock_as_timestamps", "1",
        "-i", cameras_server.url + "cameras/greys/stream.mjpg", "-t", "2", "-c", "copy", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    probe = ffprobe_json("-show_streams", "-show_entries", "packet=pts_time", str(out))
    [stream] = probe["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", *GREYS_SIZE)
    times = [float(packet["pts_time"]) for packet in probe["packets"]]
    intervals = sorted(b - a for a, b in itertools.pairwise(times))
    assert 8 <= len(times) <= 24, len(times)  # 2 s at 8 fps is 16 frames
    median = intervals[len(intervals) // 2]
    assert 0.09 < median < 0.17, intervals  # 1/8 s, not ffmpeg's 1/25


def test_ffmpeg_sends_basic_credentials_from_the_url(ffmpeg, auth_server):
    url = f"http://{FF_USER}:{FF_PASSWORD}@127.0.0.1:{auth_server.port}/stream.mjpg"
    frames = ffmpeg_frames(ffmpeg, url, 12, SIZE)
    assert_camera_frames([image_colour(frame, COLOURS) for frame in frames], COLOURS)


@pytest.mark.parametrize("credentials", ["", f"{FF_USER}:wrong@"])
def test_ffmpeg_without_the_right_credentials_gets_401(ffmpeg, auth_server, credentials):
    url = f"http://{credentials}127.0.0.1:{auth_server.port}/stream.mjpg"
    result = run_tool(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-i", url, "-frames:v", "1", "-f", "null", "-"
    )
    assert result.returncode != 0
    assert b"401 Unauthorized" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("path", "explicit_backend"),
    [("stream.mjpg", False), ("stream.mjpg", True), ("?action=stream", False)],
    ids=["stream.mjpg", "stream.mjpg-CAP_FFMPEG", "action=stream"],
)
def test_opencv_reads_the_stream(cameras_server, path, explicit_backend):
    try:
        import cv2
    except ImportError as exc:
        pytest.fail(f"OpenCV is missing ({exc}): install the test extra, pip install -e '.[test]'")
    url = cameras_server.url + path
    if explicit_backend:
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000]
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts)
    else:
        capture = cv2.VideoCapture(url)  # as users write it; OpenCV picks its FFmpeg backend
    try:
        assert capture.isOpened()
        assert capture.getBackendName() == "FFMPEG"
        width, height = SIZE
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SIZE
        indices = []
        deadline = time.monotonic() + 15
        while len(indices) < 20 and time.monotonic() < deadline:
            ok, frame = capture.read()
            assert ok, f"read failed after {len(indices)} frames"
            assert frame.shape == (height, width, 3) and frame.dtype == "uint8"
            # OpenCV gives BGR: reversed, each pixel is the camera's RGB colour.
            pixels = [tuple(int(v) for v in frame[y, x][::-1]) for x, y in sample_points(width, height)]
            indices.append(palette_index(pixels, COLOURS))
        assert len(indices) == 20, f"{len(indices)} frames in 15 s"
        assert_camera_frames(indices, COLOURS)
    finally:
        capture.release()
