"""The one output contract of the feed, pinned for every kind of output.

Each output (the recorder, the bus publisher, the variants) is attached to a
feed with :meth:`feed.FrameFeed.attach` and must: get every frame of the
source through ``put``, on the source's own thread; be reported in the
camera's ``/status`` under its ``kind``; and be closed with the feed, after
the source has stopped, with its own work finished (segments written, the
bus connection ended, the encoders stopped).  A real nats-server for the
publisher; real JPEGs, a real Matroska writer and real encoders.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feed import FrameFeed, Output
from frame import Frame
from harness.colours import COLOURS, jpeg
from harness.natsserver import NatsServer
from outputs.publisher import Publisher
from outputs.sizes import VariantKey
from outputs.variants import Variants
from recording.mkv import read_index
from recording.recorder import Recorder, RecordSettings
from tests.fakes import FakeCamera

FRAMES = 6
SOURCE_THREAD = "source-thread"


@dataclass
class Case:
    """One kind of output: how to make it, what it made of the frames, whether it ended."""

    output: Output
    #: How many live frames the output has turned into its own product so far.
    made: Callable[[], int]
    #: True once the output has finished its work and let go of everything.
    ended: Callable[[], bool]
    #: A key its status entry always has.
    status_key: str
    cleanup: Callable[[], Any] = lambda: None


async def recording_case(feed: FrameFeed, tmp_path: Path) -> Case:
    recorder = Recorder(feed.name, RecordSettings(str(tmp_path / "recordings")), fps=30)
    await asyncio.get_running_loop().run_in_executor(None, recorder.start)
    feed.attach(recorder, hold=True)

    def ended() -> bool:
        files = list(recorder.folder.iterdir())
        return not recorder.running and [f.suffix for f in files] == [".mkv"]

    def made() -> int:
        return recorder.frames_recorded

    return Case(recorder, made, ended, "frames_recorded")


async def publishing_case(feed: FrameFeed, tmp_path: Path) -> Case:
    import nats

    server = NatsServer(tmp_path).start()
    received: list[int] = []
    client = await nats.connect(server.url)

    async def got(msg: Any) -> None:
        received.append(int(msg.headers["Camstream-Seq"]))

    await client.subscribe(f"camstream.{feed.name}.frames", cb=got)
    # The server has the subscription before the publisher's first frame (a
    # PUB on the other connection could otherwise overtake the SUB).
    await client.flush()
    publisher = Publisher(feed, [server.url])
    publisher.start()
    await wait_until(lambda: publisher.bus.connected, "the publisher connected")

    async def cleanup() -> None:
        await client.close()
        server.stop()

    return Case(
        publisher,
        lambda: len(received),
        lambda: publisher.bus.loop is not None and publisher.bus.loop.is_closed(),
        "frames_published",
        cleanup,
    )


async def variants_case(feed: FrameFeed, tmp_path: Path) -> Case:
    variants = Variants(feed).attach()
    variant_feed, _ = variants.feed_for(VariantKey(2))
    variant_feed.hold("a viewer of the half-size variant")  # starts its encoder
    encoder = variant_feed.camera

    def made() -> int:
        return encoder.frames_encoded  # type: ignore[attr-defined]

    return Case(variants, made, lambda: not encoder.running and variant_feed.held is False, "sizes")


CASES = {
    "recording": recording_case,
    "publishing": pytest.param(publishing_case, marks=pytest.mark.slow),  # a nats-server process
    "variants": variants_case,
}


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)  # polling with a deadline


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("make", list(CASES.values()), ids=list(CASES))
async def test_an_output_gets_every_frame_on_the_source_thread_reports_and_closes_with_the_feed(
    make, tmp_path: Path
):
    camera = FakeCamera()
    feed = FrameFeed(camera, name="door", idle_timeout_s=10)
    hold = feed.hold("the test's source runs throughout")
    case: Case = await make(feed, tmp_path)
    source = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=SOURCE_THREAD)
    try:
        output = case.output
        assert output in feed.outputs

        # A spy on the contract's two calls: which thread puts, and when close comes.
        seen: list[tuple[int, str]] = []
        put, close = output.put, output.close
        closed_after_stops: list[int] = []

        def spy_put(frame: Frame) -> None:
            seen.append((frame.seq, threading.current_thread().name))
            put(frame)

        def spy_close() -> asyncio.Future[Any] | None:
            closed_after_stops.append(camera.stops)
            return close()

        feed.detach(output)
        output.put = spy_put  # type: ignore[method-assign]
        output.close = spy_close  # type: ignore[method-assign]
        feed.attach(output, hold=output.kind == "recording")

        loop = asyncio.get_running_loop()
        pushed = []
        for n in range(FRAMES):
            frame = await loop.run_in_executor(source, camera.push, jpeg(COLOURS[n % len(COLOURS)], (64, 48)))
            pushed.append(frame.seq)
            # The output's own pace: each frame is made before the next comes, so
            # "every frame" is what an output that keeps only the newest gets too.
            await wait_until(lambda n=n: case.made() >= n + 1, f"{output.kind} made frame {n + 1}")
        assert [seq for seq, _ in seen] == pushed
        assert {thread for _, thread in seen} == {f"{SOURCE_THREAD}_0"}

        status = feed.status()
        assert status[output.kind] == output.status()
        assert case.status_key in status[output.kind]

        hold.release()
        done = feed.close()
        assert done is not None
        await asyncio.wait_for(done, 20)
        assert closed_after_stops == [1], "closed once, after the source had stopped"
        assert case.ended(), f"the {output.kind} output did not finish with the feed"
        assert case.made() == FRAMES
    finally:
        source.shutdown()
        feed.close()
        result = case.cleanup()
        if asyncio.iscoroutine(result):
            await result


@pytest.mark.gen_test(timeout=30)
async def test_a_recording_closed_with_its_feed_has_every_frame_in_its_file(tmp_path: Path):
    camera = FakeCamera()
    feed = FrameFeed(camera, name="door", idle_timeout_s=10)
    case = await recording_case(feed, tmp_path)
    for n in range(FRAMES):
        camera.push(jpeg(COLOURS[n % len(COLOURS)], (64, 48)))
    await asyncio.wait_for(feed.close(), 20)
    (segment,) = case.output.folder.iterdir()  # type: ignore[attr-defined]
    assert len(read_index(segment).frames) == FRAMES
