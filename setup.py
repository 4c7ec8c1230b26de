"""Packaging: ``pip install .`` installs the server, its handlers, cameras and pages.

The pages' folders (``static/``, ``templates/``) stay at the top of the
repository and are installed as data files under ``share/camstream/``;
server.py's ``asset_path`` finds them in every install layout (a checkout,
``-e``, a venv, ``--user``, ``--prefix``, ``--target``).  The source
distribution (MANIFEST.in) carries the tests, docs, benchmarks and scripts too.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent

#: ``![alt](docs/x.png)`` and ``[text](docs/x.md)``: paths inside the repository.
_RELATIVE_IMAGE = re.compile(r"!\[([^\]]*)\]\((?!https?://|#)([^)\s]+)\)")
_RELATIVE_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def version() -> str:
    for line in (HERE / "settings.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split('"')[1]
    raise RuntimeError("no __version__ in settings.py")


def long_description() -> str:
    """README.md for the package index, where paths inside the repository lead
    nowhere (no repository URL is known to make them absolute): each picture
    becomes a line naming its file in the source distribution, each link to a
    file the file's name in code."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    text = _RELATIVE_IMAGE.sub(r"*(Picture: \1, `\2` in the source distribution.)*", text)
    return _RELATIVE_LINK.sub(lambda m: m.group(1) if "`" in m.group(1) else f"`{m.group(2)}`", text)


def data_files(folder: str) -> tuple[str, list[str]]:
    """The files of a top-level folder, installed under ``share/camstream/FOLDER``."""
    files = sorted(p for p in (HERE / folder).iterdir() if p.is_file())
    return (f"share/camstream/{folder}", [str(p.relative_to(HERE)) for p in files])


setup(
    name="camstream",
    version=version(),
    description="A live camera in the browser: Motion-JPEG and WebSocket from one Tornado process",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    py_modules=["server", "settings", "logs", "listening", "frame", "feed", "bus"],
    packages=["handlers", "cameras", "outputs", "recording"],
    data_files=[data_files("static"), data_files("templates")],
    install_requires=[
        # handlers/fastwrite.py writes WebSocket frames past Tornado: checked on these
        # releases by tests/test_fastwrite.py; widen only after running it on a newer one.
        "tornado>=6.4,<6.7",
        "pillow>=10.1",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "opencv": ["opencv-python-headless>=4.8"],
        "cluster": ["nats-py>=2.6"],  # --publish and nats: cameras (bus.py)
        "bench": ["matplotlib>=3.7"],  # the plot of bench/fanout.py
        "test": [
            "pytest>=8",
            "pytest-tornado==0.8.1",
            "pytest-xdist>=3.6",  # scripts/test.sh runs the suite on several workers (-n)
            # pytest-tornado 0.8.1 imports pkg_resources, which setuptools 81 removed.
            "setuptools<81",
            "wheel",  # tests/test_install.py builds a wheel without build isolation (no network)
            "opencv-python-headless>=4.8",  # tests/test_opencv.py drives the real library
            "playwright>=1.45",  # Chromium's page tests
            "selenium>=4.30",  # WebKitGTK's page tests, through WebKitWebDriver
            "websockets>=14",  # Firefox's page tests, over WebDriver BiDi
            "hypothesis>=6.100",  # fuzzing of paths, queries and options
            "cryptography>=42",  # a self-signed certificate for the HTTPS and WSS tests
            "nats-py>=2.6",  # the origin and edges, through a real nats-server
            "ruff==0.17.6",  # pinned: formatting changes between releases
        ],
    },
    entry_points={"console_scripts": ["camstream=server:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
        "License :: OSI Approved :: MIT License",
        "Topic :: Multimedia :: Video :: Capture",
    ],
)
