"""The front end's shape, read from the files (no server, no browser): every page with a
script loads the shared module (static/camstream.js) first, every name a script takes from
the one namespace (``Camstream``) is given by a script loaded before it, no inline script
(the Content-Security-Policy says script-src 'self'), and no two scripts define the same
function or repeat the same block of lines (four or more)."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
TEMPLATES = ROOT / "templates"
SHARED = "camstream.js"
#: The pages that run a script; the others (the image page, the recordings list) need none.
SCRIPTED_PAGES = {"viewer.html", "kiosk.html", "cameras.html", "player.html"}

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>")
SCRIPT_SRC = re.compile(r'\bsrc="[^"]*?\bstatic/([\w.-]+\.js)\{\{ query \}\}"')
#: What a script gives the namespace: ``global.Camstream = {...}`` or ``Object.assign(Camstream, {...})``.
EXPORTS = re.compile(r"(?:global\.Camstream\s*=\s*|Object\.assign\(Camstream,\s*)\{([^}]*)\}")
USES = re.compile(r"\bCamstream\.(\w+)")
DEFINITIONS = re.compile(
    r"^\s*(?:(?:async\s+)?function\s*\*?\s*(\w+)\s*\("  # function name(
    r"|class\s+(\w+)\b"  # class Name
    r"|(?:const|let|var)\s+(\w+)\s*=\s*(?:async\s*)?(?:function\b|(?:\([^)]*\)|\w+)\s*=>))",  # name = () =>
    re.MULTILINE,
)
#: Four lines that say something (the old copies of drawing a frame were four).
BLOCK_LINES = 4


def scripts() -> list[Path]:
    found = sorted(STATIC.glob("*.js"))
    assert found, STATIC
    return found


def page_scripts(template: Path) -> list[str]:
    """The static scripts ``template`` loads, in order."""
    found = []
    for attributes in SCRIPT_TAG.findall(template.read_text()):
        src = SCRIPT_SRC.search(attributes)
        assert src, f"{template.name}: a <script> without a static src: <script{attributes}>"
        found.append(src.group(1))
    return found


def exports(script: str) -> set[str]:
    text = (STATIC / script).read_text()
    return {name.strip() for block in EXPORTS.findall(text) for name in block.split(",") if name.strip()}


def test_the_scripted_pages_are_the_ones_expected():
    scripted = {t.name for t in TEMPLATES.glob("*.html") if page_scripts(t)}
    assert scripted == SCRIPTED_PAGES


@pytest.mark.parametrize("page", sorted(SCRIPTED_PAGES))
def test_each_page_loads_the_shared_module_first(page):
    loaded = page_scripts(TEMPLATES / page)
    assert loaded[0] == SHARED, loaded
    assert len(loaded) == len(set(loaded)), loaded
    for script in loaded:
        assert (STATIC / script).is_file(), script


@pytest.mark.parametrize("page", sorted(SCRIPTED_PAGES))
def test_each_script_uses_only_what_the_scripts_before_it_give(page):
    given: set[str] = set()
    for script in page_scripts(TEMPLATES / page):
        used = set(USES.findall((STATIC / script).read_text()))
        missing = used - given - exports(script)
        assert not missing, f"{page}: {script} uses Camstream.{sorted(missing)} before a script gives it"
        given |= exports(script)


def test_one_namespace_made_once():
    makers = [s.name for s in scripts() if re.search(r"\bglobal\.Camstream\s*=", s.read_text())]
    assert makers == [SHARED]
    for script in scripts():
        text = script.read_text()
        assert '"use strict";' in text, script.name
        # Besides the namespace, a page sets only its own handle for tests (window.camstream...).
        others = set(re.findall(r"\b(?:global|window)\.(\w+)\s*=(?!=)", text)) - {"Camstream"}
        assert all(name.startswith("camstream") for name in others), (script.name, others)
    assert {"withToken", "Retry", "drawFrame", "Notice"} <= exports(SHARED)


def test_every_script_is_loaded_by_a_page():
    loaded = {script for page in SCRIPTED_PAGES for script in page_scripts(TEMPLATES / page)}
    assert loaded == {s.name for s in scripts()}


def test_no_two_scripts_define_the_same_function():
    where: dict[str, list[str]] = {}
    for script in scripts():
        for match in DEFINITIONS.finditer(script.read_text()):
            name = next(group for group in match.groups() if group)
            where.setdefault(name, []).append(script.name)
    twice = {name: files for name, files in where.items() if len(set(files)) > 1}
    assert not twice, twice
    assert {"withToken", "drawFrame", "Notice", "Retry", "FrameSocket", "showFrame", "present"} <= set(where)


def code_lines(text: str) -> list[str]:
    """The lines that say something: no comments, blank lines or lone punctuation; white space folded."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    lines = (re.sub(r"\s+", " ", re.sub(r"^\s*//.*", "", line)).strip() for line in text.splitlines())
    return [line for line in lines if re.search(r"\w", line)]


def test_no_two_scripts_repeat_a_block_of_lines():
    blocks = {}
    for script in scripts():
        lines = code_lines(script.read_text())
        blocks[script.name] = {tuple(lines[i : i + BLOCK_LINES]) for i in range(len(lines) - BLOCK_LINES + 1)}
    for a, b in combinations(sorted(blocks), 2):
        shared = blocks[a] & blocks[b]
        assert not shared, f"{a} and {b} share {len(shared)} blocks, e.g.\n" + "\n".join(min(shared))
