"""Adaptation through a real slow link: a server process on the root side of a veth pair,
a viewer (harness/link_client.py) inside a network namespace, the server-to-viewer direction
shaped by ``tc ... tbf`` (harness/netns.py).  Root only; a link that cannot be made fails the
test with the command and its error (never a skip).

* full size (``?adapt=0``) on 2 mbit/s: every frame 640 wide and well under 20 fps: the link
  really is the bottleneck;
* adaptive (the default) on 2 mbit/s: the viewer is stepped down to a narrower variant and
  then gets about 20 fps or more; the link raised to 100 mbit/s, it climbs back to 640 wide.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import link_client
from harness.netns import LinkError, ShapedLink
from harness.process import ServerProcess

pytestmark = pytest.mark.slow

CAMERA = ["--camera", "emulated", "--width", "640", "--height", "480", "--fps", "30"]
SOURCE_WIDTH = 640


@pytest.fixture
def link() -> Iterator[ShapedLink]:
    """A 2 mbit/s link into a namespace of its own, removed after the test."""
    shaped = ShapedLink(rate="2mbit", burst="32kbit", latency="50ms")
    try:
        shaped.create()
    except LinkError as exc:
        pytest.fail(f"cannot make the shaped link (root, ip netns and tc tbf are needed): {exc}")
    try:
        yield shaped
    finally:
        shaped.close()


@pytest.fixture
def link_server(link: ShapedLink, tmp_path: Path) -> Iterator[ServerProcess]:
    """The emulated 640x480 camera at 30 fps, served on the link's root-side address."""
    logs = tmp_path / "server"
    logs.mkdir()
    server = ServerProcess(CAMERA, logs / "server", host=link.host_address).start()
    try:
        yield server
    finally:
        server.stop()
        text = server.log_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text


def start_viewer(link: ShapedLink, url: str, seconds: float, folder: Path) -> link_client.ClientProcess:
    """harness/link_client.py running in the namespace, its per-second progress in a file."""
    return link_client.ClientProcess(
        url, ["--hello", "--seconds", str(seconds)], folder / "client", link.spawn
    )


def wait_seconds(
    viewer: link_client.ClientProcess,
    ok: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float,
    what: str,
    context: Callable[[], str],
) -> list[dict[str, Any]]:
    """Poll the viewer's per-second lines until ``ok(lines)``; AssertionError naming ``what``
    with the lines seen (and ``context()``, e.g. the server's view) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = viewer.seconds()
        if ok(lines):
            return lines
        if viewer.proc.poll() is not None:
            raise AssertionError(f"{what}: the client exited; {viewer.err_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            brief = [(x["s"], x["width"], x["fps"], x["age_ms"]) for x in lines[-25:]]
            raise AssertionError(
                f"{what}: not within {timeout_s} s; last seconds (s, width, fps, median age ms): "
                f"{brief}; {context()}"
            )
        time.sleep(0.2)  # polling the client's progress file with a deadline


def run_of(lines: list[dict[str, Any]], since: int, count: int, good: Callable[[dict], bool]) -> bool:
    """Whether ``count`` consecutive seconds from line ``since`` on all satisfy ``good``."""
    streak = 0
    for line in lines[since:]:
        streak = streak + 1 if good(line) else 0
        if streak >= count:
            return True
    return False


def status_clients(server: ServerProcess) -> str:
    code, _, body = server.get("/status")
    if code != 200:
        return f"/status: HTTP {code}"
    doc = json.loads(body)
    return (
        "/status clients: "
        + json.dumps(doc.get("clients"))
        + "; variants: "
        + json.dumps(doc.get("variants"))
    )


def test_full_size_viewer_on_2_mbit_stays_640_wide_and_slow(link, link_server, tmp_path):
    url = f"ws://{link.host_address}:{link_server.port}/ws?adapt=0"
    client = start_viewer(link, url, seconds=8, folder=tmp_path)
    summary = client.summary(timeout_s=30)
    assert summary["error"] is None, summary
    late = [x for x in summary["timeline"] if x["s"] >= 2]  # after the first (buffered) seconds
    assert late, summary
    assert set(summary["sizes"]) == {"640x480"}, summary["sizes"]
    fps = sum(x["fps"] for x in late) / len(late)
    assert 2 <= fps < 15, f"full size on 2 mbit/s: {fps:.1f} fps (timeline {late}); {link.qdisc()}"
    kbit = sum(x["bytes"] for x in late) * 8 / 1000 / len(late)
    assert kbit < 2300, f"{kbit:.0f} kbit/s through a 2 mbit/s shaper: {link.qdisc()}"


def test_adaptive_viewer_steps_down_on_2_mbit_and_back_up_at_100_mbit(link, link_server, tmp_path):
    url = f"ws://{link.host_address}:{link_server.port}/ws"
    viewer = start_viewer(link, url, seconds=75, folder=tmp_path)

    def context() -> str:
        return status_clients(link_server)

    try:
        # 1. On 2 mbit/s: a narrower variant within a few seconds ...
        lines = wait_seconds(
            viewer,
            lambda xs: any(x["width"] and x["width"] < SOURCE_WIDTH for x in xs),
            15,
            "a frame narrower than 640 on 2 mbit/s",
            context,
        )
        down = next(i for i, x in enumerate(lines) if x["width"] and x["width"] < SOURCE_WIDTH)

        # ... and there about 20 fps or more (3 seconds in a row, on average).
        def fast_and_narrow(xs: list[dict]) -> bool:
            for i in range(down, len(xs) - 2):
                run = xs[i : i + 3]
                narrow = all(x["width"] and x["width"] < SOURCE_WIDTH for x in run)
                if narrow and sum(x["fps"] for x in run) >= 60:
                    return True
            return False

        wait_seconds(viewer, fast_and_narrow, 15, ">= 20 fps on a narrower variant", context)

        # 2. The link raised to 100 mbit/s: back to 640 wide within a bounded time.
        link.set_rate("100mbit", burst="256kbit")
        raised = len(viewer.seconds())
        wait_seconds(
            viewer,
            lambda xs: run_of(xs, raised, 2, lambda x: x["width"] == SOURCE_WIDTH and x["fps"] >= 20),
            35,
            "640 wide at >= 20 fps after the link went to 100 mbit/s",
            context,
        )
        clients = context()
    finally:
        summary = viewer.summary()

    # The text messages told the viewer what happened to it.
    variants = summary["variants"]
    assert any(v["width"] < SOURCE_WIDTH and v.get("adapted") for v in variants), variants
    assert variants and variants[-1]["width"] == SOURCE_WIDTH, variants
    assert '"adapt": true' in clients, clients
