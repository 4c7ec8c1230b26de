"""Packaging: ``pip install .`` installs the server, its handlers, cameras and pages."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def version() -> str:
    for line in (HERE / "settings.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split('"')[1]
    raise RuntimeError("no __version__ in settings.py")


setup(
    name="camstream",
    version=version(),
    description="A live camera in the browser: Motion-JPEG and WebSocket from one Tornado process",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    py_modules=["server", "settings", "logs"],
    packages=["handlers", "cameras", "recording"],
    data_files=[
        (f"share/camstream/{folder}", [str(p) for p in sorted(Path(folder).glob("*")) if p.is_file()])
        for folder in ("static", "templates")
    ],
    install_requires=[
        # handlers/fastwrite.py writes WebSocket frames past Tornado: checked on these
        # releases by tests/test_fastwrite.py; widen only after running it on a newer one.
        "tornado>=6.4,<6.7",
        "pillow>=10.1",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "opencv": ["opencv-python-headless>=4.8"],
        "bench": ["matplotlib>=3.7"],  # the plot of bench/fanout.py
        "test": [
            "pytest>=8",
            "pytest-tornado==0.8.1",
            # pytest-tornado 0.8.1 imports pkg_resources, which setuptools 81 removed.
            "setuptools<81",
            "opencv-python-headless>=4.8",  # tests/test_opencv.py drives the real library
            "playwright>=1.45",
            "hypothesis>=6.100",  # fuzzing of paths, queries and options
            "cryptography>=42",  # a self-signed certificate for the HTTPS and WSS tests
            "ruff==0.17.6",  # pinned: formatting changes between releases
        ],
    },
    entry_points={"console_scripts": ["camstream=server:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
        "Topic :: Multimedia :: Video :: Capture",
    ],
)
