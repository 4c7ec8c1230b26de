"""``/snapshot.jpg``: cold and warm, every URL, and a camera that sends nothing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import server
from feed import FrameFeed
from harness.colours import nearest_colour
from tests.fakes import FakeCamera


@pytest.mark.gen_test(timeout=20)
async def test_cold_snapshot_starts_the_camera_and_returns_a_frame(http_client, base_url, feed):
    assert not feed.camera.running
    response = await http_client.fetch(base_url + "/snapshot.jpg")
    assert response.code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert "no-store" in response.headers["Cache-Control"]
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert float(response.headers["X-Timestamp"]) > 0
    image = Image.open(io.BytesIO(response.body))
    assert image.format == "JPEG" and image.size == (160, 120)
    assert feed.camera.running  # kept warm for the next visitor
    assert feed.camera_starts == 1


@pytest.mark.gen_test(timeout=20)
async def test_warm_snapshots_follow_the_camera(http_client, base_url, feed):
    first = await http_client.fetch(base_url + "/snapshot.jpg")
    stamps = {float(first.headers["X-Timestamp"])}
    colours = set()
    for _ in range(40):
        response = await http_client.fetch(base_url + "/snapshot")
        stamps.add(float(response.headers["X-Timestamp"]))
        colours.add(nearest_colour(Image.open(io.BytesIO(response.body)).getpixel((80, 60))))
        if len(colours) > 1:
            break
    assert len(colours) > 1, "snapshots never changed"
    assert feed.camera_starts == 1


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("path", ["/snapshot.jpg", "/snapshot/", "/?action=snapshot", "/snapshot.jpg?_=1"])
async def test_every_snapshot_url(http_client, base_url, path):
    response = await http_client.fetch(base_url + path)
    assert response.code == 200
    assert response.body.startswith(b"\xff\xd8")


@pytest.mark.gen_test(timeout=20)
async def test_head_snapshot(http_client, base_url):
    response = await http_client.fetch(base_url + "/snapshot.jpg", method="HEAD")
    assert response.code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.body == b""


class TestSilentCamera:
    """A camera that never delivers: 503 with a short message after the wait."""

    @pytest.fixture
    def settings(self, frames_dir):
        return server.Settings.single("files", str(frames_dir), snapshot_timeout_s=0.2)

    @pytest.fixture
    def feed(self):
        feed = FrameFeed(FakeCamera(), name="silent", idle_timeout_s=10)
        yield feed
        feed.close()

    @pytest.mark.gen_test(timeout=20)
    async def test_503_when_no_frame_comes(self, http_client, base_url, feed):
        response = await http_client.fetch(base_url + "/snapshot.jpg", raise_error=False)
        assert response.code == 503
        assert response.body == b"503 Service Unavailable: no frame from the camera within 0.2 s\n"
        assert response.headers["Content-Type"].startswith("text/plain")
