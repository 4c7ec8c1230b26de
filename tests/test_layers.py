"""The house: which room may import which, read from the code itself.

From the bottom up: ``frame`` (and ``logs``, ``listening``) import nothing of ours; the bus
connection (``bus``) only the frame; the sources (``cameras``) the frame and
the bus; the feed the sources; the outputs (``outputs``, ``recording``) the
feed and below, never each other; the handlers everything below them; the
settings what they describe; ``server`` everything.  A room may import
itself.  The benchmarks and the harness never import the test suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each room and the rooms it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "frame": set(),
    "logs": set(),
    "listening": set(),
    "bus": {"frame"},
    "cameras": {"frame", "bus"},
    "feed": {"frame", "cameras"},
    "outputs": {"frame", "bus", "cameras", "feed"},
    "recording": {"frame", "feed"},
    "handlers": {"frame", "cameras", "feed", "outputs", "recording"},
    "settings": {"frame", "bus", "cameras", "recording", "handlers"},
    "server": {
        *("frame", "logs", "listening", "bus", "cameras", "feed"),
        *("outputs", "recording", "handlers", "settings"),
    },
}
OURS = set(ALLOWED) | {"tests", "bench", "harness"}


def room_of(path: Path) -> str:
    """``cameras/relay.py`` -> ``cameras``, ``feed.py`` -> ``feed``."""
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_rooms(path: Path) -> dict[str, int]:
    """The rooms of ours that ``path`` imports (anywhere in it: a lazy import
    counts too), each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                found.setdefault(top, node.lineno)
    return found


def modules_of(*rooms: str) -> list[Path]:
    out: list[Path] = []
    for room in rooms:
        folder = ROOT / room
        out += sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{room}.py"]
    return out


@pytest.mark.parametrize("path", modules_of(*ALLOWED), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_back_up_the_house(path: Path):
    room = room_of(path)
    wrong = {
        other: line
        for other, line in imported_rooms(path).items()
        if other != room and other not in ALLOWED[room]
    }
    assert not wrong, (
        f"{path.relative_to(ROOT)} imports {wrong} (line numbers); {room} may import {ALLOWED[room]}"
    )


@pytest.mark.parametrize("path", modules_of("bench", "harness"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_benchmarks_and_the_harness_do_not_import_the_tests(path: Path):
    assert "tests" not in imported_rooms(path)


def test_every_module_is_in_a_room():
    """A new top-level module or package gets its place in the table above."""
    tops = {p.stem for p in ROOT.glob("*.py")} | {
        p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests",)
    }
    assert tops - {"setup"} <= OURS, sorted(tops - OURS - {"setup"})
