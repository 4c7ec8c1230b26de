"""The adaptation rule (outputs/adapt.py) against a simulated link, on a hand-driven clock.

A viewer on rung R of its ladder is offered 30 frames a second of that rung's
size; a link of C bytes per second carries C / size of them, and the rest are
skipped (its previous frame still being written).  The rule must find the
largest rung the link carries, stay there without flapping, and climb back
when the link gets faster.
"""

from __future__ import annotations

import pytest

from outputs.adapt import Adaptation, ladder, rank
from outputs.sizes import VariantKey

FPS = 30
#: Frame bytes by (scale, quality): the emulated 640x480 camera's, measured.
SIZES = {
    (1, 80): 24300,
    (2, 80): 9100,
    (2, 50): 6400,
    (2, 30): 5200,
    (4, 80): 3700,
    (4, 50): 2600,
    (4, 30): 2200,
    (8, 80): 1850,
    (8, 50): 1380,
    (8, 30): 1180,
}


class Timer:
    def __init__(self, callback, interval_ms):
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def is_running(self):
        return self.running


class LinkViewer:
    """A viewer behind a link of ``capacity`` bytes per second."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.key = VariantKey()
        self.offered = 0
        self.skipped = 0
        self.moves: list[VariantKey] = []

    def size(self) -> int:
        return SIZES[(self.key.scale, self.key.quality or 80)]

    def advance(self, seconds: float) -> None:
        frames = FPS * seconds
        carried = min(frames, self.capacity * seconds / self.size())
        self.offered += round(frames)
        self.skipped += round(frames - carried)

    def adapt_counters(self):
        return self.offered, self.skipped

    def adapt_to(self, key, reason):
        self.key = key
        self.moves.append(key)
        return key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(adaptation: Adaptation, clock: Clock, viewer: LinkViewer, seconds: float) -> None:
    for _ in range(round(seconds / 0.5)):
        clock.now += 0.5
        viewer.advance(0.5)
        adaptation.check()


@pytest.fixture
def setup():
    clock = Clock()
    adaptation = Adaptation(lambda: 80, clock=clock, periodic=Timer)
    return clock, adaptation


def test_the_ladder_goes_from_the_asked_variant_to_the_smallest():
    rungs = ladder(VariantKey(), 80)
    assert rungs[0] == VariantKey()
    assert rungs[1:4] == [VariantKey(2, None), VariantKey(2, 50), VariantKey(2, 30)]
    assert rungs[-1] == VariantKey(8, 30)
    assert [rank(k, 80) for k in rungs] == sorted(rank(k, 80) for k in rungs)
    # No re-encode at full size: the first step down is a smaller picture.
    assert all(k.scale > 1 for k in rungs[1:])
    assert ladder(VariantKey(4, 30), 80) == [VariantKey(4, 30), VariantKey(8, 30)]


def test_a_slow_link_steps_down_to_what_it_carries_and_stays_there(setup):
    clock, adaptation = setup
    viewer = LinkViewer(capacity=250_000)  # 2 Mbit/s
    adaptation.add(viewer, VariantKey())
    run(adaptation, clock, viewer, Adaptation.grace_s)
    assert viewer.moves == []  # a new viewer's first seconds are not judged
    run(adaptation, clock, viewer, 5)
    # 320x240 q50 (6.4 KB x 30 = 192 KB/s) is the largest rung that fits.
    assert viewer.key == VariantKey(2, 50), viewer.moves
    settled = len(viewer.moves)
    run(adaptation, clock, viewer, 300)
    # Probes up fail and are undone, ever less often: no flapping.
    probes = len(viewer.moves) - settled
    assert probes <= 2 * (300 / Adaptation.up_max_s + 4), viewer.moves
    assert viewer.key == VariantKey(2, 50)
    # Most of the time on the rung that fits.
    on_fit = 0
    for _ in range(120):
        run(adaptation, clock, viewer, 0.5)
        on_fit += viewer.key == VariantKey(2, 50)
    assert on_fit >= 110


def test_a_link_that_comes_back_is_climbed_in_a_few_probes(setup):
    clock, adaptation = setup
    viewer = LinkViewer(capacity=80_000)
    adaptation.add(viewer, VariantKey())
    run(adaptation, clock, viewer, 15)
    assert viewer.key.scale >= 4, viewer.moves
    viewer.capacity = 10_000_000
    waited = 0
    while viewer.key != VariantKey():
        assert waited < 60, f"not back at full size after {waited} s: {viewer.moves}"
        run(adaptation, clock, viewer, 1)
        waited += 1


def test_a_viewer_that_keeps_up_is_never_moved(setup):
    clock, adaptation = setup
    viewer = LinkViewer(capacity=10_000_000)
    adaptation.add(viewer, VariantKey())
    run(adaptation, clock, viewer, 120)
    assert viewer.moves == []
    assert adaptation.steps_down == adaptation.steps_up == 0


def test_asking_for_another_size_keeps_a_viewer_adapted_down_as_far_down(setup):
    clock, adaptation = setup
    viewer = LinkViewer(capacity=100_000)
    adaptation.add(viewer, VariantKey())
    run(adaptation, clock, viewer, 10)
    down = viewer.key
    assert down.scale >= 2
    adaptation.add(viewer, VariantKey(2, None), current=down)
    assert rank(adaptation.target(viewer), 80) >= rank(down, 80)
    adaptation.discard(viewer)
    assert adaptation.target(viewer) is None and len(adaptation) == 0
