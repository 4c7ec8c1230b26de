"""Consumers as they are in the wild, against a real server process.

* A browser front end of another origin reading the stream with ``fetch()``, as
  3D-printer and dashboard front ends do: the body read as a stream, parts split
  by Content-Length, each JPEG drawn on a canvas; real Chromium, real CORS
  (``--allow-origin``), and a preflight when it sends an ``Authorization`` header.
* A home-automation style client that sends Basic credentials only after a 401.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import COLOURS, nearest_colour

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
    assert result["frames"] == 0 and "Failed to fetch" in result["error"]


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
