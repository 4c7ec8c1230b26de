"""The feed's rules, with a camera fed by hand and timers ticked by hand."""

from __future__ import annotations

import asyncio

import pytest

from feed import FrameFeed, Output, SubscriberGone, poll_interval_ms
from frame import CameraError
from tests.fakes import FakeCamera, FakeSubscriber, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def camera() -> FakeCamera:
    return FakeCamera()


@pytest.fixture
def feed(camera: FakeCamera, clock: ManualClock) -> FrameFeed:
    return FrameFeed(camera, idle_timeout_s=10, repeat_after_s=1.0, clock=clock)


def test_each_new_frame_is_delivered_once(feed, camera):
    sub = FakeSubscriber()
    sub.auto_complete = True
    feed.subscribe(sub)
    feed.tick()
    assert sub.sent == []  # no frame yet
    camera.push(b"one")
    feed.tick()
    feed.tick()
    feed.tick()
    assert sub.sent == [b"one"]
    camera.push(b"two")
    feed.tick()
    feed.tick()
    assert sub.sent == [b"one", b"two"]
    assert feed.frames_sent == 2
    assert feed.frames_skipped == 0


def test_busy_subscriber_skips_and_then_gets_the_newest(feed, camera):
    slow, fast = FakeSubscriber(), FakeSubscriber()
    fast.auto_complete = True
    feed.subscribe(slow)
    feed.subscribe(fast)
    camera.push(b"f1")
    feed.tick()
    camera.push(b"f2")
    feed.tick()
    assert slow.sent == [b"f1"]  # its write of f1 is still pending
    assert feed.frames_skipped == 1
    camera.push(b"f3")
    feed.tick()
    assert slow.sent == [b"f1"]
    assert feed.frames_skipped == 2
    slow.complete()
    feed.tick()  # no new frame, but the slow one is behind: it gets the newest now
    assert slow.sent == [b"f1", b"f3"]
    assert fast.sent == [b"f1", b"f2", b"f3"]
    feed.tick()
    assert slow.sent == [b"f1", b"f3"]  # never the same frame twice


def test_one_write_in_flight_per_subscriber_whatever_the_rate(feed, camera):
    slow = FakeSubscriber()
    feed.subscribe(slow)
    for i in range(100):
        camera.push(b"%d" % i)
        feed.tick()
    assert len(slow.sent) == 1
    assert sum(not f.done() for f in slow.futures) == 1
    assert feed.frames_skipped == 99


def test_wire_bytes_are_built_once_per_frame_per_encoder(feed, camera):
    calls = []

    def encoder(frame):
        calls.append(frame.seq)
        return b"<" + frame.jpeg + b">"

    subs = [FakeSubscriber(encoder) for _ in range(5)]
    plain = FakeSubscriber()
    for sub in [*subs, plain]:
        sub.auto_complete = True
        feed.subscribe(sub)
    camera.push(b"x")
    feed.tick()
    assert calls == [1]
    assert all(sub.sent == [b"<x>"] for sub in subs)
    assert plain.sent == [b"x"]
    assert subs[0].sent[0] is subs[4].sent[0]  # the same object, not a copy


def test_a_gone_subscriber_is_dropped(feed, camera):
    gone, failed, ok = FakeSubscriber(), FakeSubscriber(), FakeSubscriber()
    ok.auto_complete = True
    for sub in (gone, failed, ok):
        feed.subscribe(sub)
    camera.push()
    feed.tick()
    gone.complete()
    gone.gone = True
    failed.complete(ConnectionResetError("reset"))
    camera.push()
    feed.tick()
    assert feed.subscriber_count == 1
    assert gone.closed_by_feed and failed.closed_by_feed
    assert len(ok.sent) == 2


def test_send_raising_subscriber_gone_is_dropped_at_once(feed, camera):
    sub = FakeSubscriber()
    sub.gone = True
    feed.subscribe(sub)
    camera.push()
    feed.tick()
    assert feed.subscriber_count == 0
    assert sub.closed_by_feed


def test_camera_starts_with_first_subscriber_and_stops_after_idle_timeout(feed, camera, clock):
    assert not camera.running
    sub = FakeSubscriber()
    feed.subscribe(sub)
    assert camera.running and camera.starts == 1
    assert len(clock.running_timers()) == 1
    assert clock.running_timers()[0].interval_ms == pytest.approx(1000 / 30 / 4)
    feed.unsubscribe(sub)
    feed.unsubscribe(sub)  # idempotent
    assert clock.running_timers() == []  # nobody to deliver to: no polling
    assert camera.running  # but the camera stays warm for the idle timeout
    clock.advance(9.9)
    assert camera.running
    clock.advance(0.2)
    assert not camera.running and camera.stops == 1
    assert clock.running_timers() == [] and clock.pending == {}  # nothing ticks any more
    feed.subscribe(FakeSubscriber())
    assert camera.running and camera.starts == 2
    assert len(clock.running_timers()) == 1


def test_a_new_viewer_within_the_idle_timeout_keeps_the_camera(feed, camera, clock):
    first = FakeSubscriber()
    feed.subscribe(first)
    feed.unsubscribe(first)
    clock.advance(5)
    feed.subscribe(FakeSubscriber())
    clock.advance(60)
    assert camera.running and camera.starts == 1 and camera.stops == 0
    assert clock.pending == {}


def test_newest_frame_is_repeated_after_a_second_without_a_new_one(feed, camera, clock):
    repeating = FakeSubscriber(repeat_stale=True)
    plain = FakeSubscriber()
    for sub in (repeating, plain):
        sub.auto_complete = True
        feed.subscribe(sub)
    camera.push(b"still")
    feed.tick()
    clock.advance(0.5)
    feed.tick()
    assert repeating.sent == [b"still"]
    clock.advance(0.6)
    feed.tick()
    feed.tick()
    assert repeating.sent == [b"still", b"still"]
    assert plain.sent == [b"still"]
    assert feed.frames_repeated == 1
    clock.advance(1.0)
    feed.tick()
    assert len(repeating.sent) == 3
    camera.push(b"moving")
    feed.tick()
    clock.advance(0.5)
    feed.tick()
    assert repeating.sent[-1] == b"moving" and len(repeating.sent) == 4


def test_camera_that_cannot_start_refuses_the_subscriber(feed, camera, clock):
    def broken():
        raise CameraError("no such device")

    camera.start = broken
    with pytest.raises(CameraError, match="no such device"):
        feed.subscribe(FakeSubscriber())
    assert feed.subscriber_count == 0
    assert clock.running_timers() == []


def test_close_ends_every_subscriber_and_stops_the_camera(feed, camera, clock):
    subs = [FakeSubscriber() for _ in range(3)]
    for sub in subs:
        feed.subscribe(sub)
    camera.push()
    feed.tick()
    feed.close()
    assert all(sub.closed_by_feed for sub in subs)
    assert not camera.running
    assert clock.running_timers() == []
    with pytest.raises(CameraError):
        feed.subscribe(FakeSubscriber())


def test_status_counts(feed, camera):
    sub = FakeSubscriber()
    feed.subscribe(sub)
    camera.push()
    feed.tick()
    camera.push()
    feed.tick()
    status = feed.status()
    assert status["subscribers"] == 1
    assert status["frames_sent"] == 1
    assert status["frames_skipped"] == 1
    assert status["running"] is True
    assert status["driver"] == "fake"


@pytest.mark.gen_test
async def test_snapshot_of_a_cold_camera_waits_for_the_first_frame(feed, camera, clock):
    task = asyncio.ensure_future(feed.snapshot(timeout_s=5))
    await asyncio.sleep(0)  # let the snapshot register (one loop turn, not a delay)
    assert camera.running
    assert len(clock.running_timers()) == 1
    frame = camera.push(b"first")
    feed.tick()
    assert await task == frame
    # Nobody left: polling stops, the idle stop is armed.
    assert clock.running_timers() == []
    assert camera.running and len(clock.pending) == 1
    # Warm: the newest frame at once.
    newer = camera.push(b"second")
    assert await feed.snapshot(timeout_s=5) == newer


@pytest.mark.gen_test
async def test_snapshot_times_out_when_no_frame_comes(feed, camera, clock):
    with pytest.raises(TimeoutError):
        await feed.snapshot(timeout_s=0.05)
    assert clock.running_timers() == []
    clock.advance(10)
    assert not camera.running


def test_poll_interval_is_a_quarter_frame_within_bounds():
    assert poll_interval_ms(30) == pytest.approx(8.333, rel=1e-3)
    assert poll_interval_ms(120) == pytest.approx(2.083, rel=1e-3)
    assert poll_interval_ms(1000) == 2.0
    assert poll_interval_ms(1) == 50.0


def test_subscriber_gone_is_an_exception():
    assert issubclass(SubscriberGone, Exception)


def test_a_new_viewer_of_a_warm_camera_gets_the_current_frame_at_once(feed, camera):
    first = FakeSubscriber()
    first.auto_complete = True
    feed.subscribe(first)
    camera.push(b"current")
    feed.tick()
    late = FakeSubscriber()
    feed.subscribe(late)
    feed.tick()  # no new frame, yet the newcomer is served
    assert late.sent == [b"current"]
    assert first.sent == [b"current"]
    feed.tick()
    assert late.sent == [b"current"]


@pytest.mark.gen_test
async def test_snapshot_never_returns_the_no_signal_picture(feed, camera):
    task = asyncio.ensure_future(feed.snapshot(timeout_s=5))
    await asyncio.sleep(0)  # one loop turn: the snapshot registers its waiter
    camera.push(b"no signal", live=False)
    feed.tick()
    assert not task.done()
    live = camera.push(b"live")
    feed.tick()
    assert await task == live


def test_viewers_get_the_no_signal_picture_like_any_frame(feed, camera):
    sub = FakeSubscriber()
    sub.auto_complete = True
    feed.subscribe(sub)
    camera.push(b"live")
    feed.tick()
    camera.push(b"no signal", live=False)
    feed.tick()
    camera.push(b"live again")
    feed.tick()
    assert sub.sent == [b"live", b"no signal", b"live again"]


# -- the stop off the loop ---------------------------------------------------------
def test_the_idle_stop_runs_on_a_worker_and_a_viewer_meanwhile_waits_for_it(feed, camera, clock):
    clock.hold_workers = True  # the worker's stop has not finished until run_workers()
    first = FakeSubscriber()
    feed.subscribe(first)
    feed.unsubscribe(first)
    clock.advance(10.1)
    assert [name for name, _, _ in clock.workers] == ["stop-camera"]
    assert camera.stops == 0  # handed over, not run on the loop
    # A viewer arriving during the stop gets nothing stale and no second start.
    second = FakeSubscriber()
    second.auto_complete = True
    feed.subscribe(second)
    camera.push(b"old")
    feed.tick()
    assert second.sent == [] and camera.starts == 1
    clock.run_workers()
    assert camera.stops == 1 and camera.starts == 2 and camera.running
    camera.push(b"new")
    feed.tick()
    assert second.sent == [b"new"]


def test_a_camera_that_cannot_restart_after_its_stop_ends_the_waiting_viewers(feed, camera, clock):
    clock.hold_workers = True
    first = FakeSubscriber()
    feed.subscribe(first)
    feed.unsubscribe(first)
    clock.advance(10.1)
    waiting = FakeSubscriber()
    feed.subscribe(waiting)
    camera.start = lambda: (_ for _ in ()).throw(CameraError("unplugged"))  # type: ignore[method-assign]
    clock.run_workers()
    assert waiting.closed_by_feed and feed.subscriber_count == 0


# -- outputs and holds ----------------------------------------------------------------
class FakeSink(Output):
    kind = "fakesink"

    def __init__(self, log: list[str]) -> None:
        self.frames: list[bytes] = []
        self.log = log

    def put(self, frame) -> None:
        self.frames.append(frame.jpeg)

    def status(self) -> dict:
        return {"frames": len(self.frames)}

    def close(self) -> None:
        self.log.append("sink closed")


def test_a_sink_gets_every_frame_and_keeps_the_camera_running(feed, camera, clock):
    sink = FakeSink([])
    feed.attach(sink, hold=True)
    assert camera.running and feed.held
    assert clock.running_timers() == []  # no viewer: nothing polls
    for i in range(3):
        camera.push(b"%d" % i)  # on the camera's thread; no tick needed
    camera.push(b"no signal", live=False)
    assert sink.frames == [b"0", b"1", b"2", b"no signal"]  # the sink decides what it keeps
    clock.advance(60)
    assert camera.running and camera.stops == 0
    assert feed.status()["fakesink"] == {"frames": 4}
    feed.detach(sink)
    camera.push(b"later")
    assert sink.frames[-1] == b"no signal"
    clock.advance(10.1)
    assert not camera.running


def test_a_hold_keeps_the_camera_until_released(feed, camera, clock):
    hold = feed.hold("viewers elsewhere")
    viewer = FakeSubscriber()
    feed.subscribe(viewer)
    feed.unsubscribe(viewer)
    clock.advance(60)
    assert camera.running
    hold.release()
    hold.release()  # idempotent
    clock.advance(10.1)
    assert not camera.running


def test_close_stops_the_camera_before_closing_the_sinks(feed, camera, clock):
    order: list[str] = []
    sink = FakeSink(order)
    feed.attach(sink, hold=True)
    real_stop = camera.stop

    def stop() -> None:
        order.append("camera stopped")
        real_stop()

    camera.stop = stop  # type: ignore[method-assign]
    assert feed.close() is None  # no event loop running here: done at once
    assert order == ["camera stopped", "sink closed"]
    camera.push(b"after")
    assert sink.frames == []


def test_frames_a_rate_cap_holds_back_are_counted_apart(feed, camera):
    capped, free = FakeSubscriber(), FakeSubscriber()
    capped.accepting = False
    capped.auto_complete = free.auto_complete = True
    feed.subscribe(capped)
    feed.subscribe(free)
    for i in range(4):
        camera.push(b"%d" % i)
        feed.tick()
    assert capped.sent == [] and len(free.sent) == 4
    status = feed.status()
    assert status["frames_sent"] == 4 and status["frames_capped"] == 4
    assert status["bytes_sent"] == 4
    capped.accepting = True
    camera.push(b"now")
    feed.tick()
    assert capped.sent == [b"now"]


def test_an_output_attached_without_a_hold_takes_the_frames_of_a_source_others_run(feed, camera, clock):
    sink = FakeSink([])
    feed.attach(sink, hold=False)
    assert not camera.running and not feed.held  # it starts nothing
    assert clock.running_timers() == []
    viewer = FakeSubscriber()
    feed.subscribe(viewer)  # a viewer starts the camera: the output gets its frames too
    camera.push(b"seen")
    assert sink.frames == [b"seen"]
    feed.unsubscribe(viewer)
    clock.advance(10.1)
    assert not camera.running  # and it does not keep it


def test_one_output_of_a_kind(feed):
    feed.attach(FakeSink([]), hold=False)
    with pytest.raises(ValueError, match="fakesink"):
        feed.attach(FakeSink([]), hold=False)


class ViewingOutput(FakeSink):
    """An output that serves viewers of its own (as the variants do)."""

    kind = "viewing"

    def __init__(self, log: list[str], viewers: list[FakeSubscriber]) -> None:
        super().__init__(log)
        self.served = viewers

    def viewers(self):
        return self.served


def test_an_outputs_viewers_count_as_the_cameras(feed):
    own, theirs = FakeSubscriber(), FakeSubscriber()
    theirs.kind = "ws"
    feed.subscribe(own)
    feed.attach(ViewingOutput([], [theirs]), hold=False)
    assert feed.subscriber_count == 1 and feed.viewer_count == 2
    status = feed.status()
    assert status["subscribers"] == 2 and status["viewers"] == {"fake": 1, "ws": 1}
    assert len(status["clients"]) == 2
    feed.unsubscribe(own)
