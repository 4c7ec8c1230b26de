"""Hostile input against a real server process: a battery of bad requests, then fuzzing.

Every case must get a short 4xx (or a legitimate answer, or a clean close),
never a 5xx, never a traceback or a file's content, and the server must keep
serving the others.  The server's log must stay free of tracebacks and
errors (checked by the ``start_server`` fixture when the test ends).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server
from settings import OPTIONS

pytestmark = pytest.mark.slow

#: Bytes that would show a leak: a traceback, or the content of a server-side file.
LEAKS = (b"Traceback", b"import ", b"root:x:", b"def ", b"__version__", b'File "')


# -- a raw HTTP client ------------------------------------------------------------
def exchange(port: int, data: bytes, timeout_s: float = 5.0, read_body: bool = True) -> bytes:
    """Send ``data``; return the response head and Content-Length body, or what came
    before the server closed (or, for a stream, its first 64 KB)."""
    read_body = read_body and not data.startswith(b"HEAD ")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        answer = b""
        while len(answer) < 65536:
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep:
                found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if found and len(body) >= int(found.group(1)):
                    break
                if not read_body or b"multipart/x-mixed-replace" in head:
                    break
                if re.match(rb"HTTP/1\.[01] (101|204|304) ", head):
                    break
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            answer += chunk
        return answer


def status_of(answer: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(found.group(1)) if found else None


def check_answer(case: str, answer: bytes) -> list[str]:
    problems = []
    code = status_of(answer)
    if code is not None and code >= 500:
        problems.append(f"{case}: status {code}")
    for leak in LEAKS:
        if leak in answer.split(b"\r\n\r\n", 1)[-1][:4096] and b"image/jpeg" not in answer[:400]:
            problems.append(f"{case}: the answer contains {leak!r}")
    head = answer.split(b"\r\n\r\n", 1)[0]
    body = answer.split(b"\r\n\r\n", 1)[-1]
    if code is not None and code >= 400 and len(body) > 200:
        problems.append(f"{case}: a {code} with a {len(body)}-byte body")
    if b"text/html" in head and code is not None and code >= 400:
        problems.append(f"{case}: an HTML error page")
    return problems


def request(
    target: str | bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1", headers: bytes = b""
) -> bytes:
    if isinstance(target, str):
        target = target.encode("latin-1", "replace")
    return method + b" " + target + b" " + version + b"\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"


ROUTES = [
    "/",
    "/stream.mjpg",
    "/snapshot.jpg",
    "/status",
    "/ws",
    "/viewer",
    "/kiosk",
    "/cameras/",
    "/cameras/files/",
    "/cameras/files/snapshot.jpg",
    "/static/style.css",
    "/cameras/files/static/style.css",
    "/recordings/",
    "/recordings/index.json",
    "/recordings/files/20260101T000000Z",
    "/recordings/files/20260101T000000Z.mkv",
    "/recordings/files/20260101T000000Z.json",
]

TRAVERSALS = [
    "/../server.py",
    "/..%2fserver.py",
    "/%2e%2e/server.py",
    "/%2e%2e%2fserver.py",
    "/..%5cserver.py",
    "/..\\server.py",
    "/....//server.py",
    "/%252e%252e/server.py",
    "/..;/server.py",
    "/.%2e/.%2e/.%2e/etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/..%c0%afserver.py",
    "/..%u2216server.py",
    "/%00",
    "/..%00/server.py",
    "//etc/passwd",
    "/~root",
    "/static/../../server.py",
]


def battery() -> list[tuple[str, bytes]]:
    cases: list[tuple[str, bytes]] = []
    # Path traversal in its encoded forms, against every route and the static files.
    for route in ROUTES:
        base = route.rstrip("/")
        for trick in TRAVERSALS:
            cases.append((f"traversal {base}{trick}", request(base + trick, b"HEAD")))
        for trick in (
            "/static/../../server.py",
            "/static/%2e%2e/%2e%2e/server.py",
            "/static/..%2f..%2fserver.py",
        ):
            cases.append((f"traversal {base}{trick}", request(base + trick)))
    # Absurd and huge query values.
    for route in ("/stream.mjpg", "/snapshot.jpg", "/status", "/viewer", "/ws", "/"):
        for query in (
            "framing=" + "x" * 5000,
            "framing=img&framing=length&framing=",
            "framing=%00",
            "action=" + "%ff" * 100,
            "token=" + "t" * 7000,
            "fps=1e309&fit=%uFFFF",
            "%zz=%zz&&&==&",
            "a=" + "é" * 500,
            "x=1;y=2",
            "=" * 3000,
        ):
            method = b"HEAD" if route in ("/stream.mjpg", "/ws") else b"GET"
            cases.append((f"query {route}?{query[:30]}", request(f"{route}?{query}", method)))
    # Malformed and oversized headers; bad request lines.
    for name, data in [
        ("no Host", b"GET /status HTTP/1.1\r\n\r\n"),
        ("header without a colon", b"GET /status HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
        ("space before the colon", b"GET /status HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("obs-fold", b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n"),
        ("nul in a header", b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("binary garbage", bytes(range(256)) * 4),
        ("request line only", b"GET\r\n\r\n"),
        ("HTTP/9.9", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("HTTP/0.9", b"GET /\r\n\r\n"),
        ("lowercase method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("absolute URI", b"GET http://evil.example/status HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("negative Content-Length", b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("text Content-Length", b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
        (
            "two Content-Lengths",
            b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("unknown Transfer-Encoding", b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        (
            "bad chunk",
            b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        ),
        (
            "huge chunk",
            b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
        ),
        (
            "Expect 100",
            b"POST /snapshot.jpg HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 99999999\r\n\r\n",
        ),
        ("Range", b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\nRange: bytes=999999-0\r\n\r\n"),
        ("static Range", b"GET /static/style.css HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999-\r\n\r\n"),
        (
            "bad If-Modified-Since",
            b"GET /static/style.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: yesterday\r\n\r\n",
        ),
        ("huge header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 30000 + b"\r\n\r\n"),
        ("beyond the header cap", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n"),
        ("many headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-N: 1\r\n" * 5000 + b"\r\n"),
        ("bad Authorization", b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\r\n\r\n"),
        ("bad Origin", b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\nOrigin: ht!tp://\xff\r\n\r\n"),
        ("bad Sec-Fetch-Dest", b"GET /status HTTP/1.1\r\nHost: x\r\nSec-Fetch-Dest: \xff" * 1 + b"\r\n\r\n"),
    ]:
        cases.append((name, data))
    # HTTP/1.0 and odd methods.
    for method in (
        b"TRACE",
        b"CONNECT",
        b"PROPFIND",
        b"BREW",
        b"DELETE",
        b"PUT",
        b"PATCH",
        b"POST",
        b"OPTIONS",
    ):
        for route in ("/", "/stream.mjpg", "/ws", "/static/style.css", "/nope"):
            cases.append(
                (f"{method.decode()} {route}", request(route, method, headers=b"Content-Length: 0\r\n"))
            )
    for route in ("/", "/snapshot.jpg", "/status", "/stream.mjpg", "/static/style.css"):
        cases.append((f"HTTP/1.0 {route}", request(route, version=b"HTTP/1.0")))
    # WebSocket handshakes gone wrong.
    key = base64.b64encode(os.urandom(16))
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    for name, headers in [
        ("ws without a key", upgrade + b"Sec-WebSocket-Version: 13\r\n"),
        ("ws with a bad key", upgrade + b"Sec-WebSocket-Key: \xff\xff\r\nSec-WebSocket-Version: 13\r\n"),
        ("ws version 8", upgrade + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 8\r\n"),
        (
            "ws without Connection",
            b"Upgrade: websocket\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n",
        ),
        (
            "ws from another origin",
            upgrade
            + b"Sec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n",
        ),
        (
            "ws upgrade to a stream",
            upgrade + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n",
        ),
    ]:
        target = "/stream.mjpg" if "stream" in name else "/ws"
        cases.append((name, request(target, headers=headers)))
    return cases


# -- WebSocket frames -------------------------------------------------------------
def ws_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head, head
    return sock


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, (0x80 if mask else 0) | size])
    elif size < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code_after(port: int, data: bytes) -> int | None:
    """Send ``data`` on a fresh WebSocket; the close code the server answers with (None: no
    close frame, the connection dropped or still open after 3 s)."""
    sock = ws_connect(port)
    sock.settimeout(3)
    deadline = time.monotonic() + 3
    try:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        buffer = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return None
            if not chunk:
                return None
            buffer += chunk
            # Walk the server's frames (unmasked) looking for a close (opcode 8).
            pos = 0
            while pos + 2 <= len(buffer):
                opcode, size = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
                start = pos + 2
                if size == 126:
                    size, start = struct.unpack("!H", buffer[pos + 2 : pos + 4])[0], pos + 4
                elif size == 127:
                    size, start = struct.unpack("!Q", buffer[pos + 2 : pos + 10])[0], pos + 10
                if start + size > len(buffer):
                    break
                if opcode == 8:
                    payload = buffer[start : start + size]
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                pos = start + size
            buffer = buffer[pos:]
        return None  # still open: the frames of the stream kept coming
    finally:
        sock.close()


WS_CASES = [
    ("binary message", client_frame(2, b"\x00\x01"), {1003}),
    ("text not JSON", client_frame(1, b"not json"), {1007}),
    ("invalid UTF-8", client_frame(1, b"\xff\xfe\xfd"), {1007, 1002, None}),
    ("JSON array", client_frame(1, b"[1,2]"), {1008}),
    ("fps out of range", client_frame(1, b'{"fps": 1e309}'), {1007, 1008}),
    ("oversized message", client_frame(1, b"{" + b" " * 70000 + b"}"), {1009, None}),
    (
        "oversized fragments",
        client_frame(1, b" " * 3000, fin=False) + client_frame(0, b" " * 3000),
        {1009, None},
    ),
    ("fragments of a bad message", client_frame(1, b"{", fin=False) + client_frame(0, b"x"), {1007}),
    ("continuation first", client_frame(0, b"x"), {1002, None}),
    # Tornado accepts an unmasked client frame (RFC 6455 says close): harmless here.
    ("unmasked frame", client_frame(1, b"{}", mask=False), {1000, 1002, None}),
    ("reserved bits", client_frame(1, b"{}", rsv=7), {1002, None}),
    ("reserved opcode", client_frame(3, b"x"), {1002, None}),
    ("oversized ping", client_frame(9, b"p" * 200), {1002, None}),
    ("close with a bad code", client_frame(8, b"\x03\xe7"), {999, 1002, 1000, 1005, None}),  # an echo is fine
    ("garbage bytes", os.urandom(512), {1002, 1009, None}),
]


# -- the tests ------------------------------------------------------------------------
@pytest.fixture
def hostile_server(start_server, frames_dir, tmp_path):
    recordings = str(tmp_path / "recordings")  # so that /recordings has files to guard
    return start_server(
        *("--camera", "files", "--source", str(frames_dir), "--max-clients", "50", "--record", recordings)
    )


def alive(port: int) -> bool:
    answer = exchange(port, request("/snapshot.jpg"))
    return status_of(answer) == 200 and b"\xff\xd8" in answer


def test_a_battery_of_hostile_requests(hostile_server):
    port = hostile_server.port
    cases = battery()
    problems: list[str] = []
    for i, (name, data) in enumerate(cases):
        problems += check_answer(name, exchange(port, data))
        if i % 25 == 0:
            assert alive(port), f"the server stopped serving after {name!r}"
    assert alive(port)
    assert not problems, "\n".join(problems[:40])
    assert len(cases) > 300


def test_websocket_garbage_gets_a_clean_close(hostile_server):
    port = hostile_server.port
    problems = []
    for name, data, expected in WS_CASES:
        code = close_code_after(port, data)
        if code not in expected:
            problems.append(f"{name}: close code {code}, expected one of {expected}")
    assert not problems, "\n".join(problems)
    assert alive(port)


def test_clients_that_reset_mid_frame(hostile_server):
    port = hostile_server.port
    for path in ("/stream.mjpg", "/stream.mjpg?framing=img"):
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(request(path))
            sock.recv(3000)  # part of the head and of a frame
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST with a frame half sent
    for _ in range(20):
        sock = ws_connect(port)
        sock.recv(100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert alive(port)


# -- fuzzing --------------------------------------------------------------------------
PATH_CHARS = st.sampled_from([*list("abcz09/._-~%:;@!$&'()*+,=?#[]"), "%2e", "%2f", "%00", "%ff", "..", "//"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(PATH_CHARS, max_size=40).map("".join), method=st.sampled_from([b"GET", b"HEAD"]))
def test_fuzzed_paths(hostile_server, path, method):
    target = "/" + path
    answer = exchange(hostile_server.port, request(target, method), read_body=method == b"GET")
    assert not check_answer(target, answer)
    assert status_of(answer) is not None or answer == b""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(["/snapshot.jpg", "/status", "/viewer", "/kiosk", "/", "/cameras/files/"]),
    query=st.text(alphabet=st.characters(codec="latin-1"), max_size=200),
)
def test_fuzzed_queries(hostile_server, route, query):
    from urllib.parse import quote

    target = route + "?" + quote(query, safe="=&;%+")
    answer = exchange(hostile_server.port, request(target))
    assert not check_answer(target, answer)
    assert status_of(answer) is not None and status_of(answer) < 500


#: Every option of the table, and the two that only print.
OPTION_NAMES = [option.flag for option in OPTIONS] + ["--help", "--version"]


# Hypothesis warns when the global random module moves while it draws; threads that
# earlier tests of the same worker process left winding down may do so; parsing
# options uses no randomness.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=400, deadline=None)
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(OPTION_NAMES),
            st.text(max_size=30),
            st.from_regex(r"-?[0-9]{0,6}(\.[0-9]{0,3})?(e[0-9]{1,3})?", fullmatch=True),
        ),
        max_size=8,
    )
)
def test_fuzzed_options_parse_or_exit_2_with_one_line(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            server.parse_settings(argv, env={})
        except SystemExit as exc:
            if exc.code == 0:  # --help or --version printed and exited
                assert {"-h", "--help", "--version"} & set(argv), argv
                return
            assert exc.code == 2, (argv, exc.code)
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("server.py: error: "), (argv, err.getvalue())
