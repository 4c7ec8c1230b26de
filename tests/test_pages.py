"""The index page, static files, unknown paths and methods."""

from __future__ import annotations

import pytest


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
