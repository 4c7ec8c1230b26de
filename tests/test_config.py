"""Camera specs from ``--camera`` values and from a TOML config file (settings.py)."""

from __future__ import annotations

import pytest

from cameras.base import CameraConfig
from frame import CameraError
from settings import check_unique, load_config, parse_camera_arg
from tests.conftest import assert_one_line_error, run_cli

DEFAULTS = CameraConfig(source=None, width=640, height=480, fps=30, quality=80)


@pytest.mark.parametrize(
    ("text", "name", "driver", "source"),
    [
        ("emulated", "emulated", "emulated", None),
        ("files:/tmp/frames", "files", "files", "/tmp/frames"),
        ("garage=emulated", "garage", "emulated", None),
        ("door=files:/srv/door", "door", "files", "/srv/door"),
        (
            "relay=mjpeg:http://u:p@host:8080/stream.mjpg",
            "relay",
            "mjpeg",
            "http://u:p@host:8080/stream.mjpg",
        ),
    ],
)
def test_camera_values(text, name, driver, source):
    spec = parse_camera_arg(text, DEFAULTS)
    assert (spec.name, spec.driver, spec.config.source, spec.config.name) == (name, driver, source, name)
    assert spec.config.fps == 30


def test_source_option_applies_when_the_value_has_none():
    spec = parse_camera_arg("files", CameraConfig(source="/x"))
    assert spec.config.source == "/x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("webcam", "unknown camera driver 'webcam'"),
        ("Garage=emulated", "camera name 'Garage'"),
        ("a b=emulated", "camera name 'a b'"),
        ("../x=emulated", "camera name"),
        ("=nosuch", "unknown camera driver 'nosuch'"),
    ],
)
def test_bad_camera_values(text, message):
    with pytest.raises(CameraError, match=message.replace(".", r"\.")):
        parse_camera_arg(text, DEFAULTS)


def test_duplicate_names_are_refused():
    specs = [parse_camera_arg("emulated", DEFAULTS), parse_camera_arg("emulated", DEFAULTS)]
    with pytest.raises(CameraError, match="two cameras are named 'emulated'"):
        check_unique(specs)


def test_config_file(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text(
        """
[cameras.garage]
driver = "emulated"
width = 320
height = 240
fps = 10

[cameras.door]
driver = "files"
source = "/srv/door"
quality = 60
"""
    )
    garage, door = load_config(str(path), DEFAULTS)
    assert (garage.name, garage.driver) == ("garage", "emulated")
    assert (garage.config.width, garage.config.height, garage.config.fps, garage.config.quality) == (
        320,
        240,
        10,
        80,
    )
    assert (door.name, door.config.source, door.config.quality, door.config.width) == (
        "door",
        "/srv/door",
        60,
        640,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1", "no \\[cameras.NAME\\] tables"),
        ('[cameras.a]\ndriver = "nosuch"', "camera 'a': unknown camera driver 'nosuch'"),
        ('[cameras.a]\ndriver = "emulated"\nfps = 0', "fps 0 is out of range"),
        ('[cameras.a]\ndriver = "emulated"\nwidth = "wide"', "width must be a number"),
        ('[cameras.a]\ndriver = "emulated"\nwidth = 10.5', "width must be a whole number"),
        ('[cameras.a]\ndriver = "emulated"\nwidth = true', "width must be a number"),
        ('[cameras.a]\ndriver = "emulated"\nmax_variants = 21', "max_variants 21 is out of range \\(0-20\\)"),
        ('[cameras.a]\ndriver = "emulated"\nsource = ["0"]', "source must be a string"),
        ('[cameras.a]\ndriver = "emulated"\nrecord_max_size = "1k"', "'1k' is too small"),
        ('[cameras.a]\ndriver = "emulated"\nrecord_max_age = ["7d"]', "record_max_age must be a string"),
        ('[cameras.a]\ndriver = "emulated"\ncolour = "red"', "unknown setting 'colour'"),
        ('[cameras.A]\ndriver = "emulated"', "camera name 'A'"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    with pytest.raises(CameraError, match=message):
        load_config(str(path), DEFAULTS)


def test_missing_config_file(tmp_path):
    with pytest.raises(CameraError, match="No such file"):
        load_config(str(tmp_path / "none.toml"), DEFAULTS)


def test_a_table_without_a_driver_is_named(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.porch]\ndriver = "emulated"\n\n[cameras.garage]\nsource = "0"\n')
    with pytest.raises(CameraError) as refused:
        load_config(str(path), DEFAULTS)
    message = str(refused.value)
    assert message.startswith(f"--config {path}: the table [cameras.garage] needs a driver (driver = ")
    assert "''" not in message and "unknown" not in message


@pytest.mark.slow
def test_a_table_without_a_driver_stops_the_server_with_one_line(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.garage]\nsource = "0"\n')
    assert_one_line_error(run_cli("--config", str(path)), "the table [cameras.garage] needs a driver")


@pytest.mark.slow
def test_a_bad_source_in_a_table_names_the_table_not_source_option(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.garage]\ndriver = "files"\nsource = "/nonexistent"\n')
    assert_one_line_error(
        run_cli("--config", str(path)),
        f"error: --config {path}: [cameras.garage] source /nonexistent: not a folder",
    )
