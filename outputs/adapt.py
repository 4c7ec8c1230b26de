"""Automatic adaptation: each viewer on the largest variant its link carries.

A viewer whose link is too slow for its picture keeps skipping frames: a new
frame finds its previous one still being written (the feed counts it, per
viewer).  :class:`Adaptation` watches the skips of every adaptive viewer of
one camera and moves each one along its :func:`ladder` of variants: down a
rung (several when it gets only a small part of the frames) when it skipped
more than :attr:`Adaptation.down_ratio` of the frames over the last
:attr:`Adaptation.window_s`; back up, halfway to the rung it asked for, when
it has skipped nothing for ``up_after_s``.  Hysteresis: a step up that has
to be undone within :attr:`Adaptation.probe_s` doubles that viewer's
``up_after_s`` (up to :attr:`Adaptation.up_max_s`), one that holds halves it
again (down to :attr:`Adaptation.up_after_s`), and during a probe a few skips
are enough to step back down, so a failed probe costs a fraction of a second.

The viewers are the handlers (:class:`Adaptive`); everything here runs on
the IOLoop thread, in one periodic callback per camera, only while the
camera has adaptive viewers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from frame import Periodic
from outputs.sizes import QUALITY_LEVELS, SCALES, VariantKey

log = logging.getLogger(__name__)

#: Qualities a ladder steps through at each smaller size, below the asked one.
LADDER_QUALITIES = (50, 30)


def effective_quality(key: VariantKey, camera_quality: int) -> int:
    return key.quality if key.quality is not None else camera_quality


def ladder(asked: VariantKey, camera_quality: int) -> list[VariantKey]:
    """The variants a viewer that asked for ``asked`` may be moved through, from
    ``asked`` down: each smaller size at the asked quality, then at the lower
    levels of :data:`LADDER_QUALITIES`.  The asked size is not re-encoded at a
    lower quality: a full decode and encode costs several times a reduced
    one's and saves less than the next size down."""
    top = effective_quality(asked, camera_quality)
    rungs = [asked]
    for scale in SCALES:
        if scale <= asked.scale:
            continue
        rungs.append(VariantKey(scale, asked.quality))
        rungs += [VariantKey(scale, q) for q in LADDER_QUALITIES if q < top and q in QUALITY_LEVELS]
    return rungs


def rank(key: VariantKey, camera_quality: int) -> tuple[int, int]:
    """Orders variants from the most bytes to the fewest (the ladder's order)."""
    return key.scale, -effective_quality(key, camera_quality)


class Adaptive(Protocol):
    """An adaptive viewer (a handler): where it is, and how to move it."""

    def adapt_counters(self) -> tuple[int, int] | None:
        """``(new frames offered, frames skipped)`` on its current feed, ever; None
        while it is not attached."""

    def adapt_to(self, key: VariantKey, reason: str) -> VariantKey:
        """Move to ``key``'s variant; returns the variant it got (the cap may
        give another, or leave it where it is)."""


class _Member:
    __slots__ = (
        "asked",
        "base",
        "calm_since",
        "ceiling",
        "ceiling_until",
        "down_at",
        "from_rung",
        "history",
        "judge_from",
        "judged",
        "key",
        "rung",
        "rungs",
        "steps_down",
        "steps_up",
        "up_after_s",
        "up_at",
        "viewer",
    )

    def __init__(self, viewer: Adaptive, asked: VariantKey, camera_quality: int, up_after_s: float) -> None:
        self.viewer = viewer
        self.asked = asked
        self.rungs = ladder(asked, camera_quality)
        self.rung = 0
        self.key = asked
        #: (time, offered, skipped) samples since the last move.
        self.history: deque[tuple[float, int, int]] = deque()
        #: No decision before this time (a viewer's first seconds: connecting, a page loading).
        self.judge_from = 0.0
        self.base: tuple[int, int] | None = None
        #: Since when it has skipped nothing.
        self.calm_since = 0.0
        self.up_after_s = up_after_s
        self.up_at = -1e9
        self.down_at = -1e9
        #: Whether the last step up has been judged (held or undone), and the rung it left.
        self.judged = True
        self.from_rung = 0
        #: The rung of the last failed probe: not probed past again until ceiling_until.
        self.ceiling = -1
        self.ceiling_until = -1e9
        self.steps_down = 0
        self.steps_up = 0


class Adaptation:
    """The adaptive viewers of one camera and the rule that moves them (IOLoop thread).

    ``camera_quality`` returns the camera's own JPEG quality (for ladders);
    ``clock`` (monotonic seconds) and ``periodic`` are injectable for tests.
    """

    #: How often the viewers are looked at, ms.
    interval_ms = 500.0
    #: The span of frames a decision is based on, seconds.
    window_s = 2.0
    #: A new viewer's first seconds are not judged (it connects, its page loads).
    grace_s = 3.0
    #: Skipping more than this part of the frames over the window: a step down.
    down_ratio = 0.1
    #: After a move, the next decision waits this long (the link drains), seconds.
    settle_s = 1.0
    #: Keeping up this long (at first) before a step up, seconds; at most up_max_s.
    up_after_s = 5.0
    up_max_s = 30.0
    #: A step up undone within this long was a failed probe (up_after_s doubles);
    #: meanwhile this many skips are enough to step back down.
    probe_s = 10.0
    probe_skips = 3

    def __init__(
        self,
        camera_quality: Callable[[], int],
        clock: Callable[[], float] | None = None,
        periodic: Callable[[Callable[[], None], float], Any] = Periodic,
    ) -> None:
        import time

        self._quality = camera_quality
        self._clock = clock or time.monotonic
        self._periodic = periodic
        self._members: dict[Adaptive, _Member] = {}
        self._timer: Any = None
        #: Moves made, for status and metrics.
        self.steps_down = 0
        self.steps_up = 0

    # -- membership -------------------------------------------------------------
    def add(self, viewer: Adaptive, asked: VariantKey, current: VariantKey | None = None) -> None:
        """Adapt ``viewer``, which asked for ``asked``; it is on ``current`` (None:
        on ``asked``).  Called again when the viewer asks for another size: the
        ladder is rebuilt, and a viewer adapted down stays as far down."""
        now = self._clock()
        old = self._members.get(viewer)
        member = _Member(viewer, asked, self._quality(), self.up_after_s)
        if old is not None:
            member.up_after_s, member.up_at, member.down_at = old.up_after_s, old.up_at, old.down_at
            member.judged, member.from_rung = old.judged, old.from_rung
            member.ceiling, member.ceiling_until = old.ceiling, old.ceiling_until
            member.steps_down, member.steps_up = old.steps_down, old.steps_up
        here = current or asked
        if old is not None and old.rung > 0:
            quality = self._quality()
            wanted = rank(here, quality)
            member.rung = next(
                (i for i, key in enumerate(member.rungs) if rank(key, quality) >= wanted),
                len(member.rungs) - 1,
            )
        member.key = here
        member.judge_from = old.judge_from if old is not None else now + self.grace_s
        self._members[viewer] = member
        self._restart(member, now)
        if self._timer is None:
            self._timer = self._periodic(self.check, self.interval_ms)
        if not self._timer.is_running():
            self._timer.start()

    def discard(self, viewer: Adaptive) -> None:
        """Stop adapting ``viewer`` (idempotent)."""
        self._members.pop(viewer, None)
        if not self._members and self._timer is not None:
            self._timer.stop()

    def target(self, viewer: Adaptive) -> VariantKey | None:
        """The rung ``viewer`` should be on now (None: not adaptive)."""
        member = self._members.get(viewer)
        return None if member is None else member.rungs[member.rung]

    def describe(self, viewer: Adaptive) -> dict[str, Any] | None:
        """``viewer``'s adaptation, for /status: steps made, rung, time to the next probe."""
        member = self._members.get(viewer)
        if member is None:
            return None
        return {
            "rung": member.rung,
            "rungs": len(member.rungs),
            "steps_down": member.steps_down,
            "steps_up": member.steps_up,
            "up_after_s": member.up_after_s,
        }

    def __len__(self) -> int:
        return len(self._members)

    def close(self) -> None:
        """Stop adapting anyone (the camera is closing; idempotent)."""
        self._members.clear()
        if self._timer is not None:
            self._timer.stop()

    # -- the rule -----------------------------------------------------------------
    def _restart(self, member: _Member, now: float) -> None:
        member.history.clear()
        member.base = member.viewer.adapt_counters()
        member.history.append((now, 0, 0))
        member.calm_since = now

    def check(self) -> None:
        """Look at every adaptive viewer once and move those that must move."""
        now = self._clock()
        for member in list(self._members.values()):
            try:
                self._check(member, now)
            except Exception:  # one viewer's trouble must not stop the others' adaptation
                log.exception("adaptation of a viewer failed")

    def _check(self, member: _Member, now: float) -> None:
        counters = member.viewer.adapt_counters()
        if counters is None:
            return
        if now < member.judge_from:
            self._restart(member, now)
            return
        if member.base is None:
            member.base = counters
        offered = counters[0] - member.base[0]
        skipped = counters[1] - member.base[1]
        history = member.history
        if skipped > history[-1][2]:
            member.calm_since = now
        history.append((now, offered, skipped))
        while len(history) > 2 and now - history[1][0] >= self.window_s:
            history.popleft()
        since = now - history[0][0]
        d_offered = offered - history[0][1]
        d_skipped = skipped - history[0][2]
        probing = not member.judged
        if probing and d_skipped >= self.probe_skips and now - member.up_at >= 0.2:
            # A failed probe: back to the rung it left, known to hold; and no
            # probe as far again for a while.
            member.ceiling, member.ceiling_until = member.rung, now + 2 * self.up_max_s
            back = member.from_rung - member.rung
            self._step(member, max(1, back), now, f"skipped {d_skipped} frames after a step up")
            return
        if since < self.settle_s or d_offered <= 0:
            return
        ratio = d_skipped / d_offered
        if ratio > self.down_ratio and since >= self.window_s * 0.75:
            rungs = 1 + (ratio > 0.5) + (ratio > 0.75)
            self._step(member, rungs, now, f"skipped {d_skipped} of {d_offered} frames")
            return
        if not member.judged and now - member.up_at >= self.probe_s:
            # The last step up held: the next one may come sooner again.
            member.judged = True
            member.up_after_s = max(self.up_after_s, member.up_after_s / 2)
        calm_s = now - member.calm_since
        if member.rung > 0 and calm_s >= member.up_after_s:
            # Halfway to the top at once (a link that came back is found in a few
            # probes, not one per rung), but not past a recent failed probe; a
            # probe too far is undone within a second.
            target = member.rung - (member.rung + 1) // 2
            if now < member.ceiling_until:
                target = max(target, min(member.ceiling + 1, member.rung - 1))
            self._step(member, target - member.rung, now, f"kept up for {calm_s:.0f} s")

    def _step(self, member: _Member, rungs: int, now: float, reason: str) -> None:
        """Move ``member`` ``rungs`` down (positive) or up (negative) its ladder."""
        rung = max(0, min(len(member.rungs) - 1, member.rung + rungs))
        if rung == member.rung:
            self._restart(member, now)
            return
        if rungs > 0:
            if not member.judged:
                member.judged = True
                member.up_after_s = min(self.up_max_s, member.up_after_s * 2)  # a failed probe
            member.down_at = now
            member.steps_down += 1
            self.steps_down += 1
        else:
            member.judged = False
            member.from_rung = member.rung
            member.up_at = now
            member.steps_up += 1
            self.steps_up += 1
        member.rung = rung
        member.key = member.viewer.adapt_to(member.rungs[rung], reason)
        self._restart(member, now)
