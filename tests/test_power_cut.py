"""Power cuts while recording: ``kill -9`` of a real server at random moments, twenty times.

Each kill leaves the segment being written as a ``.mkv.part``; the next start finishes it
(or deletes it, when not one whole second was in it) before it serves anything.  At the
end every segment plays, no part is left, and each cut lost at most the second of frames
the recorder was gathering (frames reach the file a Matroska Cluster, a second, at a time).

What ``kill -9`` proves and what it does not: the process dies, the kernel does not, so
what the recorder handed to the kernel survives whether it was synced or not.  The loss
measured here is the recorder's own (the Cluster being gathered, and frames queued for the
disk).  A real power cut also loses what the kernel had not yet written out; the recorder
syncs each new Cluster at most a second apart (``Recorder.sync_interval_s``), so there it
loses about a second more.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from recording.mkv import CLUSTER_MS, read_index
from tests.camera_polling import wait_for
from tests.media import assert_plays, require_ffmpeg

FPS = 30
SIZE = (160, 120)
KILLS = 20
#: The loss a kill may cause: the Cluster being gathered, the frame after it and the one
#: being captured, and a little scheduling on a busy machine.
MAX_LOSS_S = CLUSTER_MS / 1000 + 2 / FPS + 0.1


@pytest.fixture(scope="module", autouse=True)
def ffmpeg_present() -> None:
    require_ffmpeg()


def frames_recorded(server) -> int:
    code, _, body = server.get("/status")
    assert code == 200
    return json.loads(body)["recording"]["frames_recorded"]


def frame_times(path: Path) -> list[float]:
    """The capture time (Unix seconds) of every frame of a segment."""
    index = read_index(path)
    assert index.start_time is not None
    return [index.start_time + t / 1000 for t, _, _ in index.frames]


@pytest.mark.slow
@pytest.mark.alone  # the loss is measured in time, the loop bounded in time
def test_twenty_power_cuts_lose_at_most_the_second_being_gathered(tmp_path: Path, start_server) -> None:
    folder = tmp_path / "rec"
    camera = folder / "emulated"
    rng = random.Random(20261207)  # the same moments every run
    pause = threading.Event()  # never set: its wait is the chosen moment of the cut, not a sync
    began = time.monotonic()
    server = start_server(
        *("--camera", "emulated", "--width", str(SIZE[0]), "--height", str(SIZE[1]), "--fps", str(FPS)),
        *("--record", str(folder), "--record-segment", "2"),
    )
    cuts: list[tuple[float, float]] = []  # (first frame seen recorded, the kill), wall clock
    for n in range(KILLS):
        if n:
            left = sorted(camera.glob("*.mkv.part"))
            server.start()  # returns once it serves: the recorder started, the parts finished
            said = server.current_log.read_text()  # this start's log
            for part in left:  # finished (a playable file), or deleted with not one whole second
                if f"finished {part.name}, left by a crash" in said:
                    assert read_index(camera / part.name.removesuffix(".part")).finished
                else:
                    assert f"deleting {part.name}, left by a crash: no complete frame" in said, said
        wait_for(lambda: frames_recorded(server) >= 1, timeout_s=20, what="recording", poll_s=0.01)
        recording_since = time.time()
        pause.wait(rng.uniform(0.3, 3.0))
        killed_at = time.time()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        cuts.append((recording_since, killed_at))
        assert list(camera.glob("*.mkv.part")), "a kill while recording leaves a part"
    server.start()
    assert server.stop() == 0
    elapsed_s = time.monotonic() - began
    assert elapsed_s < 90, f"the cuts took {elapsed_s:.0f} s"

    assert not list(camera.glob("*.part"))
    segments = sorted(camera.glob("*.mkv"))
    assert len(segments) >= KILLS // 2
    times: list[float] = []
    for path in segments:
        assert_plays(path, SIZE)
        times += frame_times(path)
    times.sort()
    # Each cut lost at most the second being gathered: the newest frame kept from before it
    # (or, if none of that run was kept, the first one of the run) is that close to the kill.
    losses = []
    for since, killed_at in cuts:
        kept = [t for t in times if t <= killed_at]
        newest = max(kept[-1] if kept else since, since)
        losses.append(killed_at - newest)
    assert max(losses) <= MAX_LOSS_S, [round(loss, 3) for loss in losses]
