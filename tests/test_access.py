"""Access control, CORS and the pages' security headers, against a real in-process server."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

import server
from tests.conftest import assert_one_line_error, run_cli

USER, PASSWORD, TOKEN = "viewer", "s3cret:with:colons", "tok-0123456789abcdef"
ALLOWED = "https://dash.example"

#: Every kind of route, and an unknown path: all must ask for credentials.
ROUTES = [
    "/",
    "/stream.mjpg",
    "/video_feed",
    "/?action=stream",
    "/?action=snapshot",
    "/snapshot.jpg",
    "/status",
    "/ws",
    "/viewer",
    "/kiosk",
    "/static/style.css",
    "/static/frames.js",
    "/cameras/",
    "/cameras/files/",
    "/cameras/files/snapshot.jpg",
    "/cameras/files/static/style.css",
    "/nope",
    "/static/../server.py",
]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def settings(frames_dir: Path) -> server.Settings:
    return server.Settings.single(
        "files",
        str(frames_dir),
        fps=30,
        auth=f"{USER}:{PASSWORD}",
        token=TOKEN,
        allow_origins=(ALLOWED,),
    )


async def fetch(http_client, url: str, method: str = "HEAD", **headers: str):
    return await http_client.fetch(url, method=method, headers=headers, raise_error=False)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("path", ROUTES)
async def test_every_route_asks_for_credentials(http_client, base_url, path):
    for method in ("GET", "HEAD"):
        response = await fetch(http_client, base_url + path, method)
        assert response.code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == 'Basic realm="camstream", charset="UTF-8"'
        assert method == "HEAD" or response.body == b"401 Unauthorized: this camera needs credentials\n"


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "header",
    [
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD[:-1]),
        "Basic not-base64!",
        "Basic " + base64.b64encode(USER.encode()).decode(),
        f"Bearer {TOKEN}x",
        "Bearer ",
        f"Digest {TOKEN}",
        TOKEN,
    ],
)
async def test_wrong_credentials_are_refused(http_client, base_url, header):
    response = await fetch(http_client, base_url + "/snapshot.jpg", "GET", Authorization=header)
    assert response.code == 401


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/snapshot.jpg", {"Authorization": basic(USER, PASSWORD)}),
        ("/snapshot.jpg", {"Authorization": f"Bearer {TOKEN}"}),
        (f"/snapshot.jpg?token={TOKEN}", {}),
        (f"/snapshot.jpg?x=1&token={TOKEN}", {}),
        (f"/cameras/files/snapshot.jpg?token={TOKEN}", {}),
    ],
)
async def test_right_credentials_are_let_in(http_client, base_url, path, headers):
    response = await http_client.fetch(base_url + path, headers=headers)
    assert response.code == 200 and response.body.startswith(b"\xff\xd8")


@pytest.mark.gen_test(timeout=30)
async def test_a_wrong_token_in_the_query_is_refused(http_client, base_url):
    response = await fetch(http_client, base_url + "/snapshot.jpg?token=nope", "GET")
    assert response.code == 401


@pytest.mark.gen_test(timeout=30)
async def test_websocket_needs_credentials(port):
    with pytest.raises(HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    assert refused.value.code == 401
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}")
    assert isinstance(await ws.read_message(), bytes), "frames first, no text until the client speaks"
    assert isinstance(await ws.read_message(), bytes)
    ws.close()
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers={"Authorization": basic(USER, PASSWORD)})
    ws = await tornado.websocket.websocket_connect(request)
    assert isinstance(await ws.read_message(), bytes), "frames first, no text until the client speaks"
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_pages_opened_with_a_token_pass_it_on(http_client, base_url):
    body = (await http_client.fetch(f"{base_url}/?token={TOKEN}")).body.decode()
    # (The footer's <img src="http://this-server/..."> is an example in the text.)
    urls = [u for u in re.findall(r'(?:src|href)="([^"]+)"', body) if not u.startswith(("http", "data:"))]
    assert urls and all(url.endswith(f"token={TOKEN}") for url in urls), urls
    kiosk = (await http_client.fetch(f"{base_url}/kiosk?token={TOKEN}")).body.decode()
    assert f'src="stream.mjpg?framing=img&amp;token={TOKEN}"' in kiosk
    # Opened with Basic credentials, a page has no token to pass on.
    plain = (await http_client.fetch(base_url + "/", headers={"Authorization": basic(USER, PASSWORD)})).body
    assert b"token=" not in plain


@pytest.mark.gen_test(timeout=30)
async def test_credentials_are_never_logged(http_client, base_url, caplog):
    caplog.set_level(logging.DEBUG)
    await http_client.fetch(f"{base_url}/snapshot.jpg?token={TOKEN}")
    await fetch(http_client, f"{base_url}/snapshot.jpg?token={TOKEN}x", "GET")
    await http_client.fetch(base_url + "/status", headers={"Authorization": basic(USER, PASSWORD)})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "token=***" in text
    assert TOKEN not in text and PASSWORD not in text


# -- CORS ---------------------------------------------------------------------------
@pytest.mark.gen_test(timeout=30)
async def test_cors_headers_only_for_allowed_origins(http_client, base_url, port):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await http_client.fetch(base_url + "/snapshot.jpg", headers={**auth, "Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    other = await http_client.fetch(
        base_url + "/snapshot.jpg", headers={**auth, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    head = await fetch(http_client, base_url + "/stream.mjpg", "HEAD", Origin=ALLOWED, **auth)
    assert head.headers["Access-Control-Allow-Origin"] == ALLOWED
    # The stream itself (its head is written by hand).
    from tests.mjpeg_client import open_stream

    stream, response, _parser = await open_stream(port, "/stream.mjpg", {**auth, "Origin": ALLOWED})
    assert response.headers["access-control-allow-origin"] == ALLOWED
    stream.close()


@pytest.mark.gen_test(timeout=30)
async def test_preflight(http_client, base_url):
    headers = {"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    for path in ("/snapshot.jpg", "/stream.mjpg"):
        response = await fetch(http_client, base_url + path, "OPTIONS", **headers)
        assert response.code == 204  # no credentials needed for a preflight, and none given
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        refused = await fetch(http_client, base_url + path, "OPTIONS", Origin="https://evil.example")
        assert refused.code == 403 and "Access-Control-Allow-Origin" not in refused.headers


# -- the command line -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth", "nopassword"], "--auth: give USER:PASSWORD"),
        (["--auth", ":pw"], "--auth: give USER:PASSWORD"),
        (["--token", "short"], "--token: a token is at least 8"),
        (["--token", "has space in it"], "--token: a token is at least 8"),
        (["--auth-file", "/nonexistent"], "--auth-file: /nonexistent: No such file"),
        (["--token-file", "/nonexistent"], "--token-file: /nonexistent: No such file"),
        (["--certfile", "/nonexistent.pem"], "--certfile /nonexistent.pem"),
        (["--max-clients", "0"], "--max-clients"),
        (["--stall-timeout", "0"], "--stall-timeout"),
    ],
)
def test_bad_access_options_exit_2_with_one_line(args, message):
    assert_one_line_error(run_cli(*args), message)


@pytest.mark.slow
def test_secret_files_keep_the_secret_out_of_the_process_list(start_server, frames_dir, tmp_path):
    auth_file = tmp_path / "auth"
    auth_file.write_text(f"{USER}:{PASSWORD}\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = start_server(
        *("--camera", "files", "--source", str(frames_dir)),
        *("--auth-file", str(auth_file), "--token-file", str(token_file)),
    )
    cmdline = Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline and TOKEN.encode() not in cmdline
    assert proc.get("/status")[0] == 401
    assert proc.get(f"/status?token={TOKEN}")[0] == 200
