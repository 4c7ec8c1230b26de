"""The index page, static files, unknown paths and methods."""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path

import pytest

import server
from tests.conftest import ROOT


@pytest.mark.gen_test(timeout=20)
async def test_index_page_has_the_stream_in_an_img(http_client, base_url):
    response = await http_client.fetch(base_url + "/")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    body = response.body.decode()
    assert '<img id="stream" src="stream.mjpg"' in body
    assert "<script" not in body  # works with scripts disabled
    for link in ('href="snapshot.jpg"', 'href="status"', 'href="static/style.css"'):
        assert link in body


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("path", ["/", "/?timestamp=123", "/?action=other", "/static/style.css"])
async def test_get_and_head(http_client, base_url, path):
    get = await http_client.fetch(base_url + path)
    head = await http_client.fetch(base_url + path, method="HEAD")
    assert get.code == head.code == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    "path",
    ["/nope", "/stream.mjpg.bak", "/static/missing.css", "/static/..%2fserver.py", "/static/../server.py"],
)
async def test_unknown_paths_are_short_404s(http_client, base_url, path):
    response = await http_client.fetch(base_url + path, raise_error=False)
    assert response.code in (403, 404)
    assert len(response.body) < 100
    assert b"Traceback" not in response.body and b"import" not in response.body


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused(http_client, base_url, method):
    body = b"" if method != "DELETE" else None
    response = await http_client.fetch(
        base_url + "/snapshot.jpg",
        method=method,
        body=body,
        raise_error=False,
        allow_nonstandard_methods=True,
    )
    assert response.code == 405
    assert response.body == b"405 Method Not Allowed\n"


# -- the canvas viewer and the kiosk -------------------------------------------
@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("/viewer", 'src="static/viewer.js"'),
        ("/viewer?overlay=1&_=17", 'src="static/viewer.js"'),
        ("/kiosk", 'src="static/kiosk.js"'),
        ("/kiosk?fit=cover&mode=mjpeg&1699999", 'src="static/kiosk.js"'),
    ],
)
async def test_viewer_and_kiosk_pages(http_client, base_url, path, marker):
    get = await http_client.fetch(base_url + path)
    head = await http_client.fetch(base_url + path, method="HEAD")
    assert get.code == head.code == 200
    assert get.headers["Content-Type"].startswith("text/html")
    assert head.body == b"" and head.headers["Content-Type"] == get.headers["Content-Type"]
    assert marker in get.body.decode()
    assert 'src="static/frames.js"' in get.body.decode()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    ("path", "location"),
    [("/viewer/", "../viewer"), ("/kiosk/?fit=cover", "../kiosk?fit=cover")],
)
async def test_a_trailing_slash_redirects_relatively(http_client, base_url, path, location):
    # A relative Location keeps a proxy's path prefix, and the page's relative URLs
    # (static/..., ws) resolve against the path without the slash.
    for method in ("GET", "HEAD"):
        response = await http_client.fetch(
            base_url + path, method=method, follow_redirects=False, raise_error=False
        )
        assert response.code == 301
        assert response.headers["Location"] == location


@pytest.mark.gen_test(timeout=20)
async def test_only_the_kiosk_may_be_framed_by_any_origin(http_client, base_url):
    kiosk = await http_client.fetch(base_url + "/kiosk")
    assert kiosk.headers["Content-Security-Policy"].endswith("frame-ancestors *")
    assert "X-Frame-Options" not in kiosk.headers
    for path in ("/", "/viewer", "/cameras/"):
        page = await http_client.fetch(base_url + path)
        assert page.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
        assert page.headers["X-Frame-Options"] == "DENY"


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("path", ["/", "/viewer", "/kiosk", "/cameras/"])
async def test_pages_send_security_headers(http_client, base_url, path):
    page = await http_client.fetch(base_url + path)
    policy = page.headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "base-uri 'self'"):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.gen_test(timeout=20)
async def test_index_links_to_the_viewer_and_the_kiosk(http_client, base_url):
    body = (await http_client.fetch(base_url + "/")).body.decode()
    assert 'href="viewer"' in body and 'href="kiosk"' in body
    assert "<script" not in body


@pytest.mark.parametrize(
    "name",
    [
        "viewer.html",
        "kiosk.html",
        "frames.js",
        "viewer.js",
        "kiosk.js",
        "index.html",
        "cameras.html",
        "cameras.js",
    ],
)
def test_pages_use_relative_urls_only(name):
    # Behind a reverse proxy that strips a prefix (/cam/ -> /), an absolute
    # URL would leave the prefix; every URL must be relative to the page.
    folder = "templates" if name.endswith(".html") else "static"
    text = (Path(server.asset_path(folder)) / name).read_text()
    absolute = re.findall(r"""(?:src|href)="/[^"]*"|["'`]/(?:ws|static|stream|status|snapshot)\b""", text)
    assert absolute == []
    assert "ws://" not in text and "http://" not in text.replace("http://this-server/", "")


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("name", ["index.html", "viewer.html", "kiosk.html", "cameras.html", "player.html"])
async def test_templates_are_not_served_as_static_files(http_client, base_url, name):
    # The pages are rendered from templates/; /static/ serves scripts and styles only.
    for prefix in ("/static/", "/cameras/files/static/"):
        response = await http_client.fetch(base_url + prefix + name, raise_error=False)
        assert response.code == 404, prefix + name
        assert b"{%" not in response.body and b"{{" not in response.body
    assert not list(Path(server.asset_path("static")).glob("*.html"))


# -- through a server process: options, links, the favicon ------------------------
@pytest.mark.slow
def test_frame_ancestors_restricts_who_may_frame_the_kiosk(start_server):
    proc = start_server("--frame-ancestors", "'self'   https://dash.example")
    status, headers, _ = proc.get("/kiosk")
    assert status == 200
    assert headers["Content-Security-Policy"].endswith("; frame-ancestors 'self' https://dash.example")
    assert "X-Frame-Options" not in headers
    _, headers, _ = proc.get("/")
    assert headers["Content-Security-Policy"].endswith("; frame-ancestors 'none'")
    proc = start_server(env={"CAMSTREAM_FRAME_ANCESTORS": "'none'"})
    _, headers, _ = proc.get("/cameras/emulated/kiosk")
    assert headers["Content-Security-Policy"].endswith("; frame-ancestors 'none'")
    assert headers["X-Frame-Options"] == "DENY"


def links(body: bytes) -> list[str]:
    """The ``href``s of a page's ``<a>`` elements."""
    return re.findall(r'<a [^>]*href="([^"]*)"', body.decode())


@pytest.mark.slow
def test_every_page_links_the_camera_list_and_while_recording_the_recordings(start_server, tmp_path):
    proc = start_server("--record", str(tmp_path / "rec"))
    for path, cameras, recordings in [
        ("/", "cameras/", "recordings/"),
        ("/cameras/emulated/", "../", "../../recordings/"),
        ("/cameras/", None, "../recordings/"),
    ]:
        status, _, body = proc.get(path)
        assert status == 200, path
        if cameras:
            assert cameras in links(body), path
            assert proc.get(urllib.parse.urljoin(path, cameras))[0] == 200
        assert recordings in links(body), path
        assert proc.get(urllib.parse.urljoin(path, recordings))[0] == 200
    body = proc.get("/cameras/")[2].decode()
    assert "<title>camstream: 1 camera</title>" in body and "Live camera <small>1</small>" in body
    idle = start_server()
    for path in ("/", "/cameras/emulated/", "/cameras/"):
        assert not [link for link in links(idle.get(path)[2]) if "recordings" in link], path
    assert "cameras/" in links(idle.get("/")[2])


@pytest.mark.slow
def test_the_favicon_is_served_to_anyone_and_not_logged(start_server):
    proc = start_server("--token", "0123456789")
    for _ in range(3):
        status, headers, body = proc.get("/favicon.ico")
        assert status == 200
        assert headers["Content-Type"] == "image/x-icon"
        assert body == (ROOT / "static" / "favicon.ico").read_bytes()
        assert body[:4] == b"\x00\x00\x01\x00"  # an ICO
    assert proc.get("/status")[0] == 401  # the rest still asks for the token
    deadline = time.monotonic() + 5
    while "401 GET /status" not in proc.log_text():  # the log line after the favicon's
        assert time.monotonic() < deadline, proc.log_text()
        time.sleep(0.05)  # polling the log with a deadline
    assert "favicon" not in proc.log_text()
