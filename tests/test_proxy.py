"""Behind a reverse proxy: a real nginx in front of real server processes, and
the pages through it in real browsers of three engines (harness/browsers.py).

Two ways to put the server behind a proxy, both tested here:

- the proxy strips a prefix (``/webcam/`` to ``/``) and says which in
  ``X-Forwarded-Prefix``: the pages' relative URLs resolve as they are, and
  ``<base href>`` makes them resolve even when the browser's URL lacks the
  trailing slash (``/bare`` mapped exactly to ``/``; ``/grid`` to the ``/``
  of a server of two cameras, whose scripts then open ``/grid/cameras/NAME/ws``);
- the proxy passes the path unchanged (``/cam2/`` to ``/cam2/``) to a server
  started with ``--base-path /cam2``.

Plus plain HTTP checks of ``--base-path`` (routes, 404s, the redirect of
``/``, bad values) and of junk ``X-Forwarded-Prefix`` values.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

import server
from harness.nginx import Nginx, fetch
from harness.process import ServerProcess
from tests.conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

#: The proxied WebSocket: HTTP/1.1 and the upgrade headers passed on; no buffering of
#: streams.  The browser's Host (with its port) passed on too: the server accepts a
#: WebSocket only from a page of the origin its Host names (without --allow-origin),
#: and Chromium sends no Sec-Fetch-Site with the handshake to say it is same-origin.
UPGRADE = """
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;"""

NGINX_HTTP = """
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        # Anything else (the browser's /favicon.ico) is not the server's.
        location / {{
            return 404;
        }}
        # (a) A prefix stripped: /webcam/... is the server's /...
        location /webcam/ {{
            proxy_pass http://127.0.0.1:{p1}/;
            proxy_set_header X-Forwarded-Prefix /webcam;{upgrade}
        }}
        # (b) Exactly /bare is the server's / (no trailing slash in the browser's URL)...
        location = /bare {{
            proxy_pass http://127.0.0.1:{p1}/;
            proxy_set_header X-Forwarded-Prefix /bare;
        }}
        # ...and /bare/... the rest, as in (a).
        location /bare/ {{
            proxy_pass http://127.0.0.1:{p1}/;
            proxy_set_header X-Forwarded-Prefix /bare;{upgrade}
        }}
        # (b') The same for a server of two cameras, whose / is the camera grid (scripts).
        location = /grid {{
            proxy_pass http://127.0.0.1:{p3}/;
            proxy_set_header X-Forwarded-Prefix /grid;
        }}
        location /grid/ {{
            proxy_pass http://127.0.0.1:{p3}/;
            proxy_set_header X-Forwarded-Prefix /grid;{upgrade}
        }}
        # (d) nginx's default Host (its upstream's address, not the browser's), and no
        # Sec-Fetch-Site (none comes from an http:// page on a LAN address): the
        # server refuses the page's WebSockets, and the page must say why.
        location /nohost/ {{
            proxy_pass http://127.0.0.1:{p1}/;
            proxy_set_header X-Forwarded-Prefix /nohost;
            proxy_set_header Sec-Fetch-Site "";
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
        }}
        # (c) The path passed unchanged to a server started with --base-path /cam2.
        location /cam2/ {{
            proxy_pass http://127.0.0.1:{p2};{upgrade}
        }}
    }}
"""


@dataclass
class Proxy:
    nginx: Nginx
    #: A one-camera server (640x480) behind /webcam/ and /bare.
    plain: ServerProcess
    #: A server of cameras a and b, started with --base-path /cam2, behind /cam2/.
    based: ServerProcess
    #: A server of cameras a and b behind /grid and /grid/.
    grid: ServerProcess

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """nginx in front of three server processes, for the whole module."""
    root = tmp_path_factory.mktemp("proxy")
    servers: list[ServerProcess] = []
    nginx = None

    def start(name: str, *args: str) -> ServerProcess:
        folder = root / name
        folder.mkdir()
        proc = ServerProcess(list(args), folder / "server")
        servers.append(proc)
        return proc.start()

    two = (
        "--camera",
        "a=emulated",
        "--camera",
        "b=emulated",
        "--fps",
        "10",
        "--width",
        "320",
        "--height",
        "240",
    )
    try:
        plain = start("plain", "--camera", "emulated", "--fps", "15", "--width", "640", "--height", "480")
        based = start("based", "--base-path", "/cam2", *two)
        grid = start("grid", *two)
        (root / "nginx").mkdir()
        upstreams = {"p1": plain.port, "p2": based.port, "p3": grid.port}

        def http(port: int) -> str:
            return NGINX_HTTP.format(port=port, upgrade=UPGRADE, **upstreams)

        nginx = Nginx(root / "nginx", http, "/webcam/status").start()
        yield Proxy(nginx, plain, based, grid)
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in servers:
            proc.stop()
    for proc in servers:
        text = proc.log_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text
    assert nginx.errors() == [], "\n".join(nginx.errors())


# -- in the browser, through nginx -------------------------------------------
def wait_img(page, selector: str = "#stream", timeout_ms: int = 15000) -> list[int]:
    """Wait until the <img> has a picture; its natural size."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
        arg=selector,
        timeout=timeout_ms,
    )
    return page.evaluate(
        "s => [document.querySelector(s).naturalWidth, document.querySelector(s).naturalHeight]", selector
    )


def test_a_proxy_that_does_not_pass_host_on_is_named_on_the_page_and_once_in_the_log(proxy, page):
    page.goto(proxy.url + "nohost/viewer")
    page.wait_for_function(
        "() => document.getElementById('notice').textContent.includes('proxy_set_header Host')",
        timeout=30000,
    )
    notice = page.locator("#notice")
    assert notice.is_visible()
    text = notice.inner_text()
    assert f"--allow-origin http://127.0.0.1:{proxy.nginx.port}" in text, text
    assert f"(127.0.0.1:{proxy.plain.port})" in text, "the Host the server received is named"
    page.wait_for_function("() => window.camstream.attempts >= 3", timeout=20000)  # still retrying
    lines = proxy.plain.log_text().splitlines()
    warnings = [line for line in lines if " WARNING " in line and "(403)" in line]
    assert len(warnings) == 1, warnings
    assert "proxy_set_header Host $host" in warnings[0] and f"127.0.0.1:{proxy.nginx.port}" in warnings[0]


def websockets_through(proxy, page, since: int, count: int, under: str) -> list[str]:
    """The URLs of the WebSockets under the path ``under`` that nginx passed on since byte
    ``since`` of its access log, once the page has left (nginx logs a WebSocket when it
    ends), waiting for ``count``.  (A socket of an earlier test's page, under another
    path, may end meanwhile.)"""
    page.goto("about:blank")
    access_log = proxy.nginx.folder / "access.log"
    deadline = time.monotonic() + 10
    while True:
        text = access_log.read_bytes()[since:].decode(errors="replace")
        paths = [p for p in re.findall(r'"GET (\S+) HTTP/1\.1" 101 ', text) if p.startswith(under)]
        if len(paths) >= count or time.monotonic() > deadline:
            return [f"ws://127.0.0.1:{proxy.nginx.port}{path}" for path in paths]
        time.sleep(0.05)  # polling nginx's log with a deadline


def fitted(sockets: list[str]) -> list[str]:
    """The WebSocket URLs without their query, each of which is the ``?width=N`` the
    page's canvas needs (static/frames.js asks for the variant that fits it)."""
    for url in sockets:
        assert re.fullmatch(r"[^?]+\?width=\d+", url), url
    return [url.partition("?")[0] for url in sockets]


def access_log_size(proxy) -> int:
    return (proxy.nginx.folder / "access.log").stat().st_size


def canvas_has_picture(page, selector: str) -> bool:
    image = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 20) or ()) > 10


def test_image_page_streams_through_a_prefix_stripping_proxy(proxy, page):
    page.goto(proxy.url + "webcam/")
    assert wait_img(page) == [640, 480]
    assert page.evaluate("() => document.baseURI") == proxy.url + "webcam/"
    assert page.evaluate("() => stream.src") == proxy.url + "webcam/stream.mjpg"


def test_canvas_viewer_draws_frames_over_the_websocket_through_nginx(proxy, page):
    since = access_log_size(proxy)
    page.goto(proxy.url + "webcam/viewer")
    page.wait_for_function("() => window.camstream.framesDrawn >= 10", timeout=15000, polling=50)
    shown = page.evaluate("() => JSON.parse(JSON.stringify(window.camstream))")
    assert shown["connected"] and (shown["width"], shown["height"]) == (640, 480)
    assert canvas_has_picture(page, "#canvas"), "no picture on the canvas"
    sockets = websockets_through(proxy, page, since, 1, "/webcam/")
    assert fitted(sockets) == [f"ws://127.0.0.1:{proxy.nginx.port}/webcam/ws"]


def test_kiosk_shows_frames_through_nginx(proxy, page):
    page.goto(proxy.url + "webcam/kiosk")
    page.wait_for_function("() => window.camstream.framesShown >= 10", timeout=15000, polling=50)
    assert page.evaluate("() => window.camstream.mode") == "ws", "the kiosk fell back to MJPEG"


def assert_grid_draws(proxy, page, since: int, ws_prefix: str) -> None:
    """The camera grid the page is on: its two tiles draw frames, each from its own
    WebSocket under ``ws_prefix`` (nginx's log from byte ``since``).  Leaves the page."""
    assert page.locator(".tile").count() == 2
    page.wait_for_function(
        "() => ['a', 'b'].every((n) => (window.camstream.tiles[n] || {}).framesDrawn >= 5)",
        timeout=15000,
        polling=50,
    )
    for name in ("a", "b"):
        assert canvas_has_picture(page, f"#camera-{name} canvas"), f"tile {name} shows no picture"
    under = ws_prefix.removeprefix(f"ws://127.0.0.1:{proxy.nginx.port}")
    sockets = websockets_through(proxy, page, since, 2, under)
    assert sorted(fitted(sockets)) == [ws_prefix + "a/ws", ws_prefix + "b/ws"]


def test_cameras_grid_of_a_base_path_server_draws_every_tile(proxy, page):
    since = access_log_size(proxy)
    page.goto(proxy.url + "cam2/")
    assert page.evaluate("() => document.querySelector('base')") is None  # the path says it all
    assert_grid_draws(proxy, page, since, f"ws://127.0.0.1:{proxy.nginx.port}/cam2/cameras/")


def test_a_grid_without_its_trailing_slash_runs_its_scripts(proxy, page):
    # /grid is the server's /: the scripts load thanks to <base href="/grid/">, and
    # open their sockets under it (relative to document.baseURI, not location).
    since = access_log_size(proxy)
    page.goto(proxy.url + "grid")
    assert page.evaluate("() => document.baseURI") == proxy.url + "grid/"
    assert_grid_draws(proxy, page, since, f"ws://127.0.0.1:{proxy.nginx.port}/grid/cameras/")


def test_a_page_without_its_trailing_slash_loads_its_style_stream_and_links(proxy, page):
    # /bare is the server's /: without <base href="/bare/"> the browser would look
    # for /static/style.css, /stream.mjpg and /viewer, which nginx does not pass on.
    page.goto(proxy.url + "bare")
    assert wait_img(page) == [640, 480]
    assert page.evaluate("() => document.styleSheets[0].cssRules.length") > 0, "the stylesheet did not load"
    assert page.evaluate("() => document.baseURI") == proxy.url + "bare/"
    page.click('a[href^="viewer"]')  # the link "canvas viewer"
    page.wait_for_url(proxy.url + "bare/viewer")
    page.wait_for_function("() => window.camstream.framesDrawn >= 5", timeout=15000, polling=50)


#: Pages through the proxy, and the path of each that a link, script or picture must stay under.
PAGES = [
    ("webcam/", "/webcam/"),
    ("webcam/viewer", "/webcam/"),
    ("webcam/kiosk", "/webcam/"),
    ("webcam/cameras/", "/webcam/"),
    ("webcam/cameras/emulated/viewer", "/webcam/"),
    ("bare", "/bare/"),
    ("grid", "/grid/"),
    ("grid/cameras/b/", "/grid/"),
    ("cam2/", "/cam2/"),
    ("cam2/cameras/", "/cam2/"),
    ("cam2/cameras/a/", "/cam2/"),
    ("cam2/cameras/b/viewer", "/cam2/"),
    ("cam2/kiosk", "/cam2/"),
]

#: Every URL a page refers to, resolved by the browser.
PAGE_URLS = """
() => Array.from(document.querySelectorAll("link[href], script[src], img[src], a[href]"))
  .map((e) => e.href || e.src)
  .filter((u) => !u.startsWith("data:"))
"""


@pytest.mark.parametrize(("path", "under"), PAGES)
def test_every_url_in_the_pages_resolves_through_the_proxy(proxy, page, path, under):
    page.goto(proxy.url + path)
    urls = sorted(set(page.evaluate(PAGE_URLS)))
    assert len(urls) >= 3, urls
    for url in urls:
        assert url.startswith(f"http://127.0.0.1:{proxy.nginx.port}{under}"), url
        request = urllib.request.Request(url)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # redirects followed
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 200, f"{url} (from {path}): {status}"


# -- plain HTTP ----------------------------------------------------------------
BASED_ROUTES = [
    "/cam2/",
    "/cam2/?timestamp=1",
    "/cam2/?action=snapshot",
    "/cam2/?action=stream",
    "/cam2/snapshot.jpg",
    "/cam2/stream.mjpg",
    "/cam2/status",
    "/cam2/metrics",
    "/cam2/viewer",
    "/cam2/kiosk",
    "/cam2/static/style.css",
    "/cam2/cameras/",
    "/cam2/cameras/a/",
    "/cam2/cameras/b/snapshot.jpg",
    "/cam2/cameras/b/static/frames.js",
]


@pytest.mark.parametrize("path", BASED_ROUTES)
def test_a_base_path_server_answers_under_its_prefix(proxy, path):
    status, headers, _ = fetch(proxy.based.port, path)
    assert status == 200, path
    if "snapshot" in path:
        assert headers["content-type"] == "image/jpeg"
    if "stream" in path:
        assert headers["content-type"].startswith("multipart/x-mixed-replace")


@pytest.mark.parametrize(
    "path",
    [
        "/status",
        "/snapshot.jpg",
        "/stream.mjpg",
        "/viewer",
        "/static/style.css",
        "/cameras/",
        "/cameras/a/",
        "/metrics",
        "/cam2x/status",
        "/cam/status",
        "/webcam/cam2/",
        "/cam2/cam2/",
        "/cam2/nope",
    ],
)
def test_paths_outside_the_base_path_are_404(proxy, path):
    status, _, body = fetch(proxy.based.port, path)
    assert status == 404, path
    assert len(body) < 100


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "/cam2/"),
        ("/?timestamp=1", "/cam2/?timestamp=1"),
        ("/?action=stream", "/cam2/?action=stream"),
        ("/cam2", "/cam2/"),
        ("/cam2/cameras", "cameras/"),
    ],
)
def test_the_root_redirects_to_the_base_path(proxy, path, location):
    status, headers, _ = fetch(proxy.based.port, path)
    assert status == 301
    assert headers["location"] == location


def test_a_base_path_server_says_where_it_serves(proxy):
    assert f"on http://127.0.0.1:{proxy.based.port}/cam2/ " in proxy.based.log_text()
    status = json.loads(fetch(proxy.based.port, "/cam2/status")[2])
    assert list(status["cameras"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/webcam", "/webcam"), ("/webcam/", "/webcam"), ("/a/b-c_d.e~f", "/a/b-c_d.e~f"), ("/", ""), ("", "")],
)
def test_good_base_paths_are_normalised(value, expected):
    assert server.parse_settings(["--base-path", value], env={}).base_path == expected
    assert server.parse_settings([], env={"CAMSTREAM_BASE_PATH": value}).base_path == expected


@pytest.mark.parametrize(
    "value",
    [
        "webcam",
        "/a/../b",
        "/..",
        "/./a",
        "//evil.example",
        "/a//b",
        "http://evil.example/a",
        "/a b",
        '/a"b',
        "/a?b=1",
        "/a#b",
        "/%2e%2e",
        "/a\\b",
        "/caf\u00e9",
        "/a\nb",
        "/" + "a" * 250,
    ],
)
def test_a_bad_base_path_exits_2_with_one_line(value):
    assert_one_line_error(run_cli("--base-path", value), "--base-path")
    assert_one_line_error(run_cli(env={"CAMSTREAM_BASE_PATH": value}), "--base-path")


def test_a_clean_forwarded_prefix_gives_the_pages_a_base(proxy):
    port = proxy.plain.port
    for path, base in [
        ("/", "/webcam/"),
        ("/viewer", "/webcam/"),
        ("/cameras/", "/webcam/cameras/"),
        ("/cameras/emulated/kiosk", "/webcam/cameras/emulated/"),
    ]:
        status, headers, body = fetch(port, path, {"X-Forwarded-Prefix": "/webcam/"})
        assert status == 200
        assert f'<base href="{base}">' in body.decode(), path
        assert "X-Forwarded-Prefix" in headers["vary"]
        assert "base-uri 'self'" in headers["content-security-policy"]
    # Without the header, no base: the pages' URLs are relative to where they are.
    status, headers, body = fetch(port, "/viewer")
    assert status == 200 and b"<base" not in body
    assert "X-Forwarded-Prefix" in headers["vary"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "webcam",
        "http://evil.example/",
        "https://evil.example",
        "//evil.example",
        "//evil.example/x",
        "/a/../b",
        "/..",
        "/webcam/..",
        "/%2e%2e/x",
        '/x"><script>alert(1)</script>',
        "/x'y",
        "/a b",
        "javascript:alert(1)",
        "/a,/b",
        "/a//b",
        "/a?b",
        "/a#b",
        "/a\\b",
        "/" + "a" * 300,
    ],
)
def test_junk_forwarded_prefixes_are_ignored(proxy, value):
    for path in ("/", "/viewer", "/kiosk", "/cameras/"):
        status, headers, body = fetch(proxy.plain.port, path, {"X-Forwarded-Prefix": value})
        assert status == 200, (path, value)
        assert b"<base" not in body, (path, value)
        assert "X-Forwarded-Prefix" in headers["vary"]


def test_every_route_moves_under_the_base_path(tmp_path):
    # Whoever adds a route (here the recordings' too), the table moves as a whole.
    argv = [
        "--base-path",
        "/cam2",
        "--record",
        str(tmp_path),
        "--camera",
        "a=emulated",
        "--camera",
        "b=emulated",
    ]
    settings = server.parse_settings(argv, env={})
    feeds = server.make_feeds(settings)
    try:
        rules = server.make_app(settings, feeds).wildcard_router.rules
    finally:
        for feed in feeds.values():
            feed.close()
    outside = [
        rule.matcher.regex.pattern for rule in rules if not rule.matcher.regex.pattern.startswith("/cam2(?:")
    ]
    assert outside == ["/$", "/cam2$"]  # the two redirects to /cam2/

    def handler(path: str) -> str | None:
        start = RequestStartLine("GET", path, "HTTP/1.1")
        request = HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "cam"}))
        found = [rule.target.__name__ for rule in rules if rule.matcher.match(request) is not None]
        return found[0] if found else None

    assert handler("/cam2/recordings/") == "RecordingsPageHandler"
    assert handler("/recordings/") is None
    assert handler("/cam2/?action=stream") == "MjpegHandler"
    assert handler("/cam2/cameras/b/ws") == "WsHandler"
