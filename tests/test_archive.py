"""recording/archive.py: listings and indexes off the IOLoop, cached; and a real
server whose /recordings/ holds 10 days of 5-minute segments while a 30 fps
viewer watches (the viewer must not notice the visits)."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from pathlib import Path

import pytest

from harness.colours import jpeg
from recording import mkv
from recording.archive import Archive, day_of, parse_day
from recording.mkv import MkvWriter, format_start, read_index
from tests.mjpeg_client import StreamReader

log = logging.getLogger(__name__)

SEGMENT_S = 300


def segment_bytes(tmp_path: Path, start: float) -> bytes:
    """A small valid finished segment of 3 frames (0.2 s) starting at ``start``."""
    path = tmp_path / "template.mkv"
    writer = MkvWriter(path, width=64, height=48, fps=10, start_time=start)
    for i in range(3):
        writer.add(jpeg((40 * i, 80, 160)), i * 100)
    writer.close()
    return path.read_bytes()


def fill(folder: Path, template: bytes, start: float, count: int, step_s: float = SEGMENT_S) -> list[str]:
    """``count`` copies of ``template`` (which starts at ``start``) named ``step_s``
    apart from ``start``, each with its own start time in its header; their names,
    oldest first."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = mkv._date_utc(start)  # the header's DateUTC, rewritten in each copy
    assert template.count(stamp) == 1
    names = []
    for i in range(count):
        t = start + i * step_s
        name = format_start(t)
        (folder / f"{name}.mkv").write_bytes(template.replace(stamp, mkv._date_utc(t)))
        names.append(name)
    return names


def aligned(t: float) -> float:
    return float(int(t // SEGMENT_S) * SEGMENT_S)


# -- the archive itself -----------------------------------------------------------
def test_parse_day() -> None:
    assert parse_day("2026-11-21") == "2026-11-21"
    for bad in [
        "",
        "2026-11-31",
        "2026-1-21",
        "21-11-2026",
        "2026-11-21x",
        "\uff12\uff10\uff12\uff16-11-21",
        "2026-13-01",
    ]:
        with pytest.raises(ValueError):
            parse_day(bad)


@pytest.mark.gen_test(timeout=30)
async def test_a_listing_is_read_once_and_refreshed_by_a_scan(tmp_path: Path) -> None:
    start = aligned(time.time() - 3 * 86400)
    folder = tmp_path / "rec" / "yard"
    names = fill(folder, segment_bytes(tmp_path, start), start, 50, step_s=3 * 3600)
    (folder / "notes.txt").write_text("not a segment")
    archive = Archive({"yard": folder, "plain": None, "absent": tmp_path / "nowhere"})
    try:
        first = await archive.segments("yard")
        assert [s.name for s in first] == names
        assert all(s.length_s == pytest.approx(0.3) for s in first)  # 3 frames at 10 fps
        assert [s.start for s in first] == [start + i * 3 * 3600 for i in range(50)]
        assert archive.descriptions_read == 50
        # A second listing reads no file again: only a scan.
        assert await archive.segments("yard") == first
        assert archive.descriptions_read == 50
        assert await archive.segments("plain") == [] and await archive.segments("absent") == []
        assert await archive.segments("nope") == []

        # A new segment shows at the next listing; only it is read.
        new_start = start + 50 * 3 * 3600
        [new] = fill(folder, segment_bytes(tmp_path, new_start), new_start, 1)
        (folder / f"{names[0]}.mkv").unlink()
        listed = await archive.segments("yard")
        assert [s.name for s in listed] == [*names[1:], new]
        assert archive.descriptions_read == 51

        # Pages and days: newest first, only the page's segments read.
        days = sorted({day_of(s.start) for s in listed}, reverse=True)
        page = await archive.page("yard", page=2, rows=20)
        assert (page.pages, page.total, page.first) == (3, 50, 20)
        assert [s.name for s in page.segments] == [s.name for s in reversed(listed)][20:40]
        assert [d for d, _ in page.days] == days
        assert sum(n for _, n in page.days) == 50
        one_day = await archive.page("yard", day=days[1], rows=20)
        assert {day_of(s.start) for s in one_day.segments} == {days[1]}
        assert one_day.total == dict(page.days)[days[1]]
        assert (await archive.page("yard", page=9, rows=20)).segments == ()
        assert (await archive.page("yard", day="2001-01-01")).total == 0

        # The player's neighbours, and a file that is not a recording.
        previous, this, following = await archive.neighbours("yard", names[5])
        assert (previous, this.name, following) == (names[4], names[5], names[6])
        assert await archive.neighbours("yard", "20010101T000000Z") == (None, None, None)
        (folder / "20010101T000000Z.mkv").write_bytes(b"not a recording")
        _, broken, _ = await archive.neighbours("yard", "20010101T000000Z")
        assert broken.length_s is None and broken.size == 15
        with pytest.raises(mkv.MkvError):
            await archive.index(broken.path)
        index = await archive.index(folder / f"{names[5]}.mkv")
        assert index.frame_count == 3
        assert await archive.find("yard", names[5]) == folder / f"{names[5]}.mkv"
        assert await archive.find("yard", "../x") is None
    finally:
        archive.close()


@pytest.mark.gen_test(timeout=30)
async def test_the_segment_being_written_is_read_again_when_it_grows(tmp_path: Path) -> None:
    folder = tmp_path / "yard"
    folder.mkdir()
    start = aligned(time.time())
    name = format_start(start)
    writer = MkvWriter(folder / f"{name}.mkv.part", width=64, height=48, fps=10, start_time=start)
    archive = Archive({"yard": folder})
    try:
        for i in range(25):
            writer.add(jpeg(), i * 100)
        writer.flush_cluster()
        [part] = await archive.segments("yard")
        assert part.recording and part.frames == 25
        for i in range(25, 40):
            writer.add(jpeg(), i * 100)
        writer.flush_cluster()
        [part] = await archive.segments("yard")
        assert part.frames == 40 and archive.descriptions_read == 2
        writer.close()
        (folder / f"{name}.mkv.part").rename(folder / f"{name}.mkv")
        [done] = await archive.segments("yard")
        assert not done.recording and done.length_s == pytest.approx(read_index(done.path).length_ms() / 1000)
    finally:
        archive.close()


# -- a real server with 10 days of segments ------------------------------------------------
ROWS = re.compile(rb'<tr class="segment[^"]*" data-segment="([^"]+)"')


def rows(page: bytes) -> list[str]:
    return [m.decode() for m in ROWS.findall(page)]


@pytest.mark.slow
@pytest.mark.alone  # a viewer's longest gap, to 150 ms
def test_a_large_archive_does_not_stall_a_viewer(tmp_path: Path, start_server, frames_dir: Path) -> None:
    # 3000 segments, 5 minutes apart, ending half a day ago (the server records its own after them).
    start = aligned(time.time() - 3000 * SEGMENT_S - 43200)
    folder = tmp_path / "rec"
    made = fill(folder / "files", segment_bytes(tmp_path, start), start, 3000)
    mine, newest_first = set(made), made[::-1]
    server = start_server(
        *("--camera", "files", "--source", str(frames_dir), "--fps", "30", "--record", str(folder))
    )
    day = day_of(start + 1500 * SEGMENT_S)
    middle = made[1234]
    visits = [
        "/recordings/index.json",
        "/recordings/",
        f"/recordings/?day={day}",
        "/recordings/?page=3",
        f"/recordings/files/{middle}",
        f"/recordings/files/{middle}.json",
    ] * 3
    viewer = StreamReader(server.port)
    try:
        viewer.wait_for(15, timeout_s=10)  # it runs at its pace
        # The visits, timed; their answers are checked afterwards, so that the
        # test's own parsing cannot delay the viewer's thread meanwhile.
        answers = []
        for path in visits:
            before = time.monotonic()
            answers.append((path, before, *server.get(path, timeout_s=30), time.monotonic()))
        count = len(viewer.parts)
        parts = viewer.wait_for(count + 5, timeout_s=10)

        # A new segment shows at the next visit.
        new_start = aligned(time.time() - 3600)
        [new] = fill(folder / "files", segment_bytes(tmp_path, new_start), new_start, 1)
        _, _, body = server.get("/recordings/index.json", timeout_s=30)
        assert new in [s["name"] for s in json.loads(body)["cameras"]["files"]["segments"]]
        _, _, page = server.get("/recordings/", timeout_s=30)
        assert new in rows(page)[:3]
    finally:
        viewer.close()

    # The viewer's frames kept coming, at their pace, all along.
    began, ended = answers[0][1], answers[-1][-1]
    arrivals = [p.arrived for p in parts if began - 0.2 <= p.arrived]
    assert arrivals[0] < began and arrivals[-1] > ended
    gaps = [(b - a, a) for a, b in itertools.pairwise(arrivals)]
    gap, at = max(gaps)
    during = [path for path, t0, *_, t1 in answers if t0 - 0.05 <= at <= t1 + 0.05]
    log.info("visits took %.2f s; largest gap %.0f ms in %d frames", ended - began, gap * 1000, len(gaps))
    assert gap < 0.150, f"the viewer stalled for {gap * 1000:.0f} ms, during {during}"

    # The answers: every segment listed, a page or a day at a time, newest first.
    for path, _, code, headers, body, _ in answers:
        assert code == 200, (path, body[:200])
        if path.endswith("index.json"):
            assert headers["Content-Type"] == "application/json"
            listed = [s["name"] for s in json.loads(body)["cameras"]["files"]["segments"]]
            assert [n for n in listed if n in mine] == made  # every one, oldest first
            assert listed == sorted(listed) and len(listed) - len(made) <= 2  # and the one being written
        elif path == "/recordings/":
            shown = rows(body)
            assert len(shown) == 288  # a page, not 3000 rows
            assert shown == sorted(shown, reverse=True)
            assert shown[-1] in mine and set(listed) - mine <= set(shown)  # the newest: the server's
            assert b'<a class="older" href="./?page=2#camera-files">' in body
            days = {day_of(start + i * SEGMENT_S) for i in range(3000)}
            assert len(re.findall(rb'<a class="day" href="./\?day=[0-9-]+#camera-files">', body)) >= len(days)
        elif "?day=" in path:
            expected = [made[i] for i in range(2999, -1, -1) if day_of(start + i * SEGMENT_S) == day]
            assert rows(body) == expected[:288]
            assert f'href="./?day={day}#camera-files"' not in body.decode()  # this day: no link
        elif "?page=3" in path:
            third = rows(body)
            at = newest_first.index(third[0])  # 576, less the server's own segments on page 1
            assert 570 <= at <= 576 and third == newest_first[at : at + 288]
        elif path.endswith(".json"):
            assert len(json.loads(body)["t"]) == 3
        else:  # the player, with links to its neighbours
            assert f'href="{made[1233]}"'.encode() in body and f'href="{made[1235]}"'.encode() in body


def test_a_bad_day_or_page_is_one_short_line(tmp_path: Path, start_server, frames_dir: Path) -> None:
    folder = tmp_path / "rec"
    server = start_server("--camera", "files", "--source", str(frames_dir), "--record", str(folder))
    for query in [
        "day=yesterday",
        "day=2026-02-30",
        "day=2026-11-21T00",
        "page=0",
        "page=-1",
        "page=x",
        "page=9999999",
        "day=2026-11-21&page=1.5",
    ]:
        for path in ("/recordings/", "/recordings/index.json"):
            code, headers, body = server.get(f"{path}?{query}")
            if "page" in query and path.endswith(".json"):
                assert code == 200, query  # index.json takes no page
                continue
            assert code == 400, (path, query)
            assert headers["Content-Type"].startswith("text/plain"), (path, query)
            assert body.count(b"\n") == 1 and len(body) < 100, body
            assert b"Traceback" not in body
    # Unknown parameters are ignored; a day without segments shows none.
    code, _, page = server.get("/recordings/?day=2001-01-01&_=123")
    assert code == 200 and rows(page) == []
    assert server.get("/recordings/index.json?day=2001-01-01")[0] == 200


def test_the_listing_links_carry_the_token(tmp_path: Path, start_server, frames_dir: Path) -> None:
    folder = tmp_path / "rec"
    start = aligned(time.time() - 3 * 86400)
    made = fill(folder / "files", segment_bytes(tmp_path, start), start, 2, step_s=86400)
    server = start_server(
        *("--camera", "files", "--source", str(frames_dir), "--record", str(folder), "--token", "SECRET99")
    )
    code, _, page = server.get("/recordings/?token=SECRET99")
    assert code == 200
    day = day_of(start)
    assert f'<a class="day" href="./?day={day}&amp;token=SECRET99#camera-files">'.encode() in page
    code, _, page = server.get(f"/recordings/?day={day}&token=SECRET99")
    assert code == 200 and rows(page) == made[:1]
    assert b'<a class="newest" href="./?token=SECRET99#camera-files">' in page
    assert server.get(f"/recordings/?day={day}")[0] == 401
