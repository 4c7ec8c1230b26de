"""The package as a user gets it: the source distribution's contents, and the
server installed from it in every layout pip makes (a venv, ``--user``,
``--prefix``, ``--target``), started, with a page and its style sheet fetched.

Everything is built and installed from this tree into temporary folders, with
``--no-deps --no-build-isolation`` (no network); the installed server finds its
dependencies in this venv's site-packages through a ``.pth`` file of the fresh
environment, and its pages' files where pip put them (``server.asset_path``).
A checkout and ``pip install -e .`` are what every other test runs.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado

from harness.process import stop_process
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

#: What the source distribution must carry besides the code.
SDIST_MUST_HOLD = (
    "LICENSE",
    "README.md",
    "MANIFEST.in",
    "pyproject.toml",
    "setup.py",
    "server.py",
    "settings.py",
    "frame.py",
    "feed.py",
    "bus.py",
    "handlers/__init__.py",
    "cameras/__init__.py",
    "outputs/variants.py",
    "recording/recorder.py",
    "static/style.css",
    "static/camstream.js",
    "templates/base.html",
    "templates/index.html",
    "tests/conftest.py",
    "tests/test_install.py",
    "docs/camstream.service",
    "docs/index.png",
    "bench/fanout.py",
    "harness/process.py",
    "scripts/test.sh",
)

#: Left out of the copy the sdist is built from: caches, the venv, git.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
)


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command to completion; its output shown if it fails."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source distribution, built from a copy of this tree (so no build
    files land in the tree others work in)."""
    work = tmp_path_factory.mktemp("sdist")
    source = work / "camstream"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    run(sys.executable, "setup.py", "-q", "sdist", "-d", work / "dist", cwd=source)
    (built,) = (work / "dist").glob("camstream-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the unpacked source distribution (so the sdist is complete)."""
    work = tmp_path_factory.mktemp("wheel")
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "src", filter="data")
    (unpacked,) = (work / "src").iterdir()
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "dist", unpacked, cwd=work)
    (built,) = (work / "dist").glob("camstream-*.whl")
    return built


def fresh_venv(where: Path) -> Path:
    """A new venv (no pip; with the system site-packages, so ``--user`` installs
    are seen) whose ``.pth`` file adds this venv's site-packages for the
    dependencies (tornado, pillow...).  That folder is added as a plain path,
    so its editable camstream hook does not run.  Returns its python."""
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", where, cwd=where.parent)
    python = where / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where)
    deps = Path(tornado.__file__).resolve().parent.parent
    (Path(purelib.stdout.strip()) / "camstream-test-deps.pth").write_text(f"{deps}\n")
    return python


def pip_install(python: Path, wheel: Path, *options: str | Path, env: dict[str, str]) -> None:
    """``pip install --no-deps WHEEL OPTIONS`` for the interpreter ``python``."""
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(
        *pip, "install", "-q", "--no-deps", "--no-build-isolation", *options, wheel, cwd=wheel.parent, env=env
    )


def base_env(tmp: Path) -> dict[str, str]:
    """A bare environment whose home and user base are temporary folders."""
    (tmp / "home").mkdir(exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp / "home"),
        "PYTHONUSERBASE": str(tmp / "userbase"),
    }


def install(layout: str, wheel: Path, tmp: Path) -> tuple[Path, dict[str, str], Path]:
    """camstream installed from ``wheel`` in ``layout``: its ``camstream``
    command, the environment to run it with, and where its data files must be."""
    env = base_env(tmp)
    python = fresh_venv(tmp / "venv")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if layout == "venv":
        pip_install(python, wheel, env=env)
        return tmp / "venv" / "bin" / "camstream", env, tmp / "venv" / "share" / "camstream"
    if layout == "user":
        pip_install(python, wheel, "--user", env=env)
        base = Path(env["PYTHONUSERBASE"])
        return base / "bin" / "camstream", env, base / "share" / "camstream"
    if layout == "prefix":
        prefix = tmp / "prefix"
        pip_install(python, wheel, "--prefix", prefix, env=env)
        scheme = sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})
        assert Path(scheme["purelib"]) == prefix / "lib" / version / "site-packages"
        env["PYTHONPATH"] = scheme["purelib"]
        return prefix / "bin" / "camstream", env, prefix / "share" / "camstream"
    assert layout == "target"
    target = tmp / "target"
    pip_install(python, wheel, "--target", target, env=env)
    env["PYTHONPATH"] = str(target)
    return target / "bin" / "camstream", env, target / "share" / "camstream"


class Installed:
    """The installed ``camstream`` command running on a loopback port."""

    def __init__(self, command: Path, env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / "server.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [command, "--host", "127.0.0.1", "--port", "0"],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)  # polling the log with a deadline
        self.stop()
        pytest.fail(f"the installed server did not start:\n{self.log.read_text(errors='replace')}")

    def get(self, path: str) -> tuple[int, str, bytes]:
        """Status, Content-Type and body of a GET."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def installed_server() -> Iterator:
    """``installed_server(command, env, cwd)``: a started Installed, stopped after the test."""
    started: list[Installed] = []

    def start(command: Path, env: dict[str, str], cwd: Path) -> Installed:
        started.append(Installed(command, env, cwd))
        return started[-1]

    yield start
    for server in started:
        server.stop()
        text = server.log.read_text(errors="replace")
        assert "Traceback" not in text, text


def test_the_sdist_holds_the_license_tests_docs_bench_scripts_and_pages(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        members = {name.removeprefix(top + "/") for name in names}
        info = tar.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        metadata = email.parser.Parser().parsestr(info.read().decode())
    missing = [name for name in SDIST_MUST_HOLD if name not in members]
    assert not missing, f"not in the sdist: {missing}"
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]
    assert "Copyright (c) 2026 the camstream authors" in (ROOT / "LICENSE").read_text()
    assert metadata["License"] == "MIT"
    # The package index shows the README without the repository: no relative
    # picture or link may be left in it, and every picture is named by its file.
    description = metadata.get_payload()
    assert not re.search(r"\]\((?!https?://|#)", description), "a relative link in the long description"
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        assert f"`{picture}` in the source distribution" in description


@pytest.mark.parametrize("layout", ["venv", "user", "prefix", "target"])
def test_the_installed_server_serves_its_pages(
    layout: str, wheel: Path, tmp_path: Path, installed_server
) -> None:
    command, env, share = install(layout, wheel, tmp_path)
    assert (share / "static" / "style.css").is_file(), f"pip put no data files in {share}"
    server = installed_server(command, env, tmp_path)
    status, kind, body = server.get("/")
    assert status == 200, body
    assert kind.startswith("text/html")
    assert b'<img id="stream" src="stream.mjpg"' in body
    status, kind, body = server.get("/static/style.css")
    assert (status, kind) == (200, "text/css")
    assert body == (share / "static" / "style.css").read_bytes()  # the installed copy, not the repository's


def test_an_install_without_its_pages_refuses_to_start_with_one_line(wheel: Path, tmp_path: Path) -> None:
    command, env, share = install("target", wheel, tmp_path)
    shutil.rmtree(share / "static")
    result = subprocess.run(
        [command, "--port", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("server.py: error: the pages' static/ folder is missing"), lines[0]


# -- the systemd unit -------------------------------------------------------------
UNIT = ROOT / "docs" / "camstream.service"


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's ``Key=value`` lines by section (continuations joined, comments left out)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections.setdefault(section, {}).setdefault(key, []).append(value)
    return sections


def test_the_service_may_write_the_recordings_folder_and_nothing_else(tmp_path: Path) -> None:
    from settings import parse_settings

    service = unit_settings(UNIT.read_text())["Service"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["StateDirectory"] == ["camstream"]  # /var/lib/camstream, writable
    assert "ReadWritePaths" not in service
    # Its command line is one the server takes (files standing in for /etc/camstream's).
    program, script, *args = service["ExecStart"][0].split()
    assert (program, script) == ("/opt/camstream/.venv/bin/python", "server.py")
    assert service["WorkingDirectory"] == ["/opt/camstream"]
    config, auth = tmp_path / "cameras.toml", tmp_path / "auth"
    config.write_text('[cameras.pi]\ndriver = "emulated"\n')
    auth.write_text("viewer:choose-a-password\n")
    args = [a.replace("/etc/camstream/cameras.toml", str(config)) for a in args]
    args = [a.replace("/etc/camstream/auth", str(auth)) for a in args]
    settings = parse_settings([*args, "--record", "/var/lib/camstream/recordings"], env={})
    assert settings.host == "0.0.0.0" and settings.auth == "viewer:choose-a-password"
    # The README records into the state directory, as the unit's comment says.
    readme = (ROOT / "README.md").read_text()
    for text in (readme, UNIT.read_text()):
        assert "--record /var/lib/camstream/recordings" in text
    # systemd's own check, with the paths of this checkout for the program.
    local = UNIT.read_text().replace("/opt/camstream/.venv/bin/python", sys.executable)
    local = local.replace("WorkingDirectory=/opt/camstream", f"WorkingDirectory={ROOT}")
    (tmp_path / "camstream.service").write_text(local)
    if shutil.which("systemd-analyze"):
        result = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / "camstream.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
