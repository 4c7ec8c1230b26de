"""The option table (settings.py): defaults, the environment, ranges, one-line errors,
``--help`` and the README's table of options, which must list exactly the table's."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

import server
import settings as table
from cameras import CameraConfig, check_driver, create_camera
from frame import CameraError
from recording.recorder import RecordSettings
from settings import (
    BY_FLAG,
    GROUPS,
    OPTIONS,
    TABLE_KEYS,
    Option,
    Settings,
    build_parser,
    load_config,
    parse_age,
    parse_camera_arg,
    parse_settings,
    parse_size,
)
from tests.conftest import ROOT, assert_one_line_error, run_cli


def value_of(settings: Settings, option: Option):
    """What ``option`` set in ``settings``, wherever it goes."""
    first = settings.cameras[0]
    if option.into == table.SERVER:
        return getattr(settings, option.attribute)
    if option.into == table.CAMERA:
        return getattr(first.config, option.attribute)
    if option.into == table.SPEC:
        return getattr(first, option.attribute)
    if option.into == table.RECORD:
        return None if first.record is None else getattr(first.record, option.attribute)
    return [(spec.name, spec.driver) for spec in settings.cameras]


def exit_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """The one line ``parse_settings`` writes when it exits with status 2 (in process)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        parse_settings(argv, env=env or {})
    assert exited.value.code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("server.py: error: "), err.getvalue()
    return lines[0]


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.porch]\ndriver = "emulated"\n')
    return str(path)


# -- defaults -------------------------------------------------------------------
def test_defaults():
    settings = parse_settings([], env={})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.idle_timeout_s) == ("127.0.0.1", 8080, 10)
    [camera] = settings.cameras
    assert (camera.name, camera.driver, camera.record) == ("emulated", "emulated", None)
    assert camera.config == CameraConfig(
        name="emulated", source=None, width=640, height=480, fps=30, quality=80
    )


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.into != table.CAMERAS], ids=lambda o: o.flag)
def test_every_default_is_the_tables(option):
    value = value_of(parse_settings([], env={}), option)
    assert value == (None if option.into == table.RECORD else option.default)


def test_settings_need_a_camera():
    with pytest.raises(ValueError, match="at least one camera"):
        Settings(cameras=())


def test_one_camera_in_one_line(tmp_path):
    settings = Settings.single("files", str(tmp_path), fps=12, quality=50, idle_timeout_s=3, port=9)
    [camera] = settings.cameras
    assert (camera.name, camera.driver, camera.record) == ("files", "files", None)
    assert camera.config == CameraConfig(name="files", source=str(tmp_path), fps=12, quality=50)
    assert (settings.idle_timeout_s, settings.port) == (3, 9)
    record = RecordSettings(str(tmp_path))
    [yard] = Settings.single(name="yard", record=record).cameras
    assert (yard.name, yard.driver, yard.config.name, yard.record) == ("yard", "emulated", "yard", record)
    [door] = Settings.single(name="door", max_variants=2, fps=5).cameras
    assert (door.max_variants, door.config.fps) == (2, 5)
    with pytest.raises(TypeError):
        Settings.single(colour="red")


# -- the environment ------------------------------------------------------------
#: For each option, a value as text and what it reads as (the cameras: name and driver).
SAMPLES: dict[str, tuple[str, object]] = {
    "--host": ("0.0.0.0", "0.0.0.0"),
    "--port": ("9000", 9000),
    "--allow-origin": ("https://a.example", ("https://a.example",)),
    "--frame-ancestors": ("'self'  https://dash.example", "'self' https://dash.example"),
    "--publish": ("nats://127.0.0.1:4222", ("nats://127.0.0.1:4222",)),
    "--bus-auth": ("edge:s3cret", "edge:s3cret"),
    "--bus-prefix": ("cams.site1", "cams.site1"),
    "--reuse-port": ("1", True),
    "--certfile": ("/etc/c.pem", "/etc/c.pem"),
    "--keyfile": ("/etc/k.pem", "/etc/k.pem"),
    "--max-clients": ("7", 7),
    "--stall-timeout": ("2.5", 2.5),
    "--base-path": ("/webcam/", "/webcam"),
    "--auth": ("user:secret", "user:secret"),
    "--token": ("0123456789abcdef", "0123456789abcdef"),
    "--camera": ("door=files", [("door", "files")]),
    "--config": ("{config}", [("porch", "emulated")]),
    "--source": ("/srv/frames", "/srv/frames"),
    "--fps": ("12.5", 12.5),
    "--width": ("320", 320),
    "--height": ("240", 240),
    "--quality": ("60", 60),
    "--max-variants": ("2", 2),
    "--idle-timeout": ("0.5", 0.5),
    "--snapshot-timeout": ("1", 1.0),
    "--record": ("/var/rec", "/var/rec"),
    "--record-segment": ("60", 60.0),
    "--record-max-size": ("2G", parse_size("2G")),
    "--record-max-age": ("7d", parse_age("7d")),
    "--relay-max-part": ("4M", 4_000_000),
    "--log-level": ("DEBUG", "debug"),
}
WITH_ENV = [o for o in OPTIONS if o.env_names]


def test_every_option_has_a_sample():
    assert set(SAMPLES) == {o.flag for o in WITH_ENV}


@pytest.mark.parametrize("option", WITH_ENV, ids=lambda o: o.flag)
def test_the_environment_and_the_command_line_set_each_option(option, config_file):
    text, expected = SAMPLES[option.flag]
    text = text.format(config=config_file)
    # A recording option shows only on a camera that records.
    extra = {"CAMSTREAM_RECORD": "/var/rec"} if option.into == table.RECORD else {}
    for name in option.env_names:
        assert value_of(parse_settings([], env={**extra, name: text}), option) == expected, name
    argv = [option.flag] if option.action == "store_true" else [option.flag, text]  # a switch takes no value
    assert value_of(parse_settings(argv, env=extra), option) == expected


def test_the_command_line_wins_over_the_environment():
    env = {"CAMERA": "files", "CAMSTREAM_FPS": "12.5", "CAMSTREAM_PORT": "9000", "CAMSTREAM_SOURCE": "/x"}
    settings = parse_settings([], env=env)
    assert (settings.port, settings.cameras[0].driver) == (9000, "files")
    assert (settings.cameras[0].config.fps, settings.cameras[0].config.source) == (12.5, "/x")
    settings = parse_settings(["--fps", "5", "--camera", "emulated", "--port", "1"], env=env)
    assert (settings.port, settings.cameras[0].driver, settings.cameras[0].config.fps) == (1, "emulated", 5)
    # $CAMSTREAM_CAMERA wins over $CAMERA; a config file over both.
    assert (
        parse_settings([], env={"CAMERA": "files", "CAMSTREAM_CAMERA": "mjpeg"}).cameras[0].driver == "mjpeg"
    )


def test_a_config_file_ignores_the_camera_of_the_environment(config_file):
    settings = parse_settings(["--config", config_file], env={"CAMERA": "files"})
    assert [spec.name for spec in settings.cameras] == ["porch"]


def test_origins_repeat_and_the_first_on_the_command_line_replaces_the_environments():
    env = {"CAMSTREAM_ALLOW_ORIGIN": "https://a.example, https://b.example"}
    assert parse_settings([], env=env).allow_origins == ("https://a.example", "https://b.example")
    argv = ["--allow-origin", "https://c.example", "--allow-origin", "https://c.example/"]
    assert parse_settings(argv, env=env).allow_origins == ("https://c.example",)


def test_secret_files(tmp_path):
    (tmp_path / "auth").write_text("user:secret\nignored\n")
    (tmp_path / "token").write_text("0123456789abcdef\n")
    argv = ["--auth-file", str(tmp_path / "auth"), "--token-file", str(tmp_path / "token")]
    settings = parse_settings(argv, env={"CAMSTREAM_AUTH": "other:pw"})
    assert (settings.auth, settings.token) == ("user:secret", "0123456789abcdef")
    (tmp_path / "bus").write_text("s3cr3t-token\n")
    assert parse_settings(["--bus-auth-file", str(tmp_path / "bus")], env={}).bus_auth == "s3cr3t-token"


def test_a_switch_reads_the_usual_words_from_the_environment():
    for text in ("1", "true", "Yes", "on"):
        assert parse_settings([], env={"CAMSTREAM_REUSE_PORT": text}).reuse_port is True
    for text in ("0", "false", "no", "OFF", ""):
        assert parse_settings([], env={"CAMSTREAM_REUSE_PORT": text}).reuse_port is False
    assert "CAMSTREAM_REUSE_PORT: 'maybe'" in exit_line([], env={"CAMSTREAM_REUSE_PORT": "maybe"})


# -- ranges ---------------------------------------------------------------------
NUMBERS = [o for o in OPTIONS if o.limit]
#: The options every camera has, which a camera's table of a config file may set too.
PER_CAMERA = [o for o in OPTIONS if o.into in (table.CAMERA, table.SPEC, table.RECORD)]


def test_a_camera_table_has_the_keys_of_the_per_camera_options():
    assert PER_CAMERA and all(o.toml for o in PER_CAMERA)
    assert {o.toml for o in OPTIONS if o.toml} == {o.toml for o in PER_CAMERA}
    assert {o.toml for o in PER_CAMERA} | {"driver"} == TABLE_KEYS
    for option in PER_CAMERA:
        number = isinstance(option.default, int | float) and not isinstance(option.default, bool)
        assert bool(option.limit) == number, option.flag  # every number has its range, in its option
    assert {o.toml for o in PER_CAMERA if o.limit} == {
        "width",
        "height",
        "fps",
        "quality",
        "record_segment",
        "max_variants",
    }


@pytest.mark.parametrize("option", NUMBERS, ids=lambda o: o.flag)
def test_each_number_takes_its_range_and_nothing_beyond(option):
    limit = option.limit
    step = 1 if limit.kind is int else limit.low / 10 or 0.001
    extra = ["--record", "/var/rec"] if option.into == table.RECORD else []
    for good in (limit.low, limit.high):
        assert value_of(parse_settings([*extra, option.flag, f"{good:g}"], env={}), option) == good
    for bad in (limit.low - step, limit.high + step, "nan", "inf", "x"):
        assert option.flag in exit_line([*extra, option.flag, f"{bad}"])
    if limit.kind is int:
        assert "is not a whole number" in exit_line([option.flag, f"{limit.low + 0.5}"])


@pytest.mark.parametrize("option", [o for o in PER_CAMERA if o.limit], ids=lambda o: o.toml)
def test_a_config_file_has_the_range_of_the_command_line(tmp_path, option):
    """The same numbers pass and the same fail, in a camera's table and on the command line."""
    limit = option.limit
    step = 1 if limit.kind is int else limit.low / 10
    flags = ["--record", "/var/rec"] if option.into == table.RECORD else []
    keys = 'record = "/var/rec"\n' if option.into == table.RECORD else ""
    path = tmp_path / "cameras.toml"

    def from_file(value: float) -> str:
        toml = str(value).lower() if isinstance(value, bool) else repr(value)
        path.write_text(f'[cameras.a]\ndriver = "emulated"\n{keys}{option.toml} = {toml}\n')
        return str(path)

    for good in (limit.low, limit.high, limit.kind(limit.low + step)):
        number = limit.kind(good)
        assert value_of(parse_settings(["--config", from_file(number)], env={}), option) == good
        assert value_of(parse_settings([*flags, option.flag, f"{number!r}"], env={}), option) == good
    for bad in (limit.low - step, limit.high + step):
        refused = exit_line(["--config", from_file(bad)])
        assert refused == f"server.py: error: camera 'a': {option.toml} {bad} is out of range " + (
            f"({limit.low:g}-{limit.high:g})"
        )
        assert f"is out of range ({limit.describe()})" in exit_line([*flags, option.flag, f"{bad!r}"])
    assert f"{option.toml} must be a number" in exit_line(["--config", from_file(True)])
    if limit.kind is int:
        assert f"{option.toml} must be a whole number" in exit_line(["--config", from_file(limit.low + 0.5)])
        assert "is not a whole number" in exit_line([option.flag, f"{limit.low + 0.5}"])


@pytest.mark.parametrize(
    ("key", "value", "read"),
    [("record_max_size", '"2G"', parse_size("2G")), ("record_max_age", '"7d"', parse_age("7d"))],
)
def test_a_config_file_reads_a_text_value_with_its_options_parser(tmp_path, key, value, read):
    path = tmp_path / "cameras.toml"
    option = next(o for o in OPTIONS if o.toml == key)
    for given, expected in ((value, read), (str(int(read)), read)):  # a TOML number too
        path.write_text(f'[cameras.a]\ndriver = "emulated"\nrecord = "/var/rec"\n{key} = {given}\n')
        assert value_of(parse_settings(["--config", str(path)], env={}), option) == expected
    path.write_text(f'[cameras.a]\ndriver = "emulated"\n{key} = "x"\n')
    with pytest.raises(CameraError) as in_file:
        load_config(str(path), CameraConfig())
    assert str(in_file.value) == f"camera 'a': {exit_line([option.flag, 'x']).split(': ')[-1]}"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500M", 500_000_000),
        ("20G", 20_000_000_000),
        ("1.5T", 1_500_000_000_000),
        ("2GiB", 2 * 1024**3),
        ("3000000", 3_000_000),
        (5_000_000, 5_000_000),
        ("10 mb", 10_000_000),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "-5G", "5X", "100", "1k", True, "nan", "1e9"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "age"),
    [("90m", 5400), ("36h", 129600), ("7d", 604800), ("2w", 1209600), ("3600", 3600), (120, 120)],
)
def test_ages(text: str | int, age: float) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "a week", "-1d", "30", "5y", False, "1000000w"])
def test_bad_ages(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text)


# -- the driver check, once -----------------------------------------------------
def test_one_message_for_an_unknown_driver(tmp_path):
    with pytest.raises(CameraError) as checked:
        check_driver("nosuch")
    message = str(checked.value)
    assert message.startswith("unknown camera driver 'nosuch' (known: emulated, files,")
    with pytest.raises(CameraError) as created:
        create_camera("nosuch", CameraConfig())
    with pytest.raises(CameraError) as argument:
        parse_camera_arg("x=nosuch", CameraConfig())
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.a]\ndriver = "nosuch"\n')
    with pytest.raises(CameraError) as configured:
        load_config(str(path), CameraConfig())
    assert str(created.value) == str(argument.value) == message
    assert str(configured.value) == f"camera 'a': {message}"
    assert exit_line(["--camera", "nosuch"]) == f"server.py: error: {message}"


# -- errors: one line, status 2 -------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--camera", "nosuch"], {}, "unknown camera driver 'nosuch'"),
        ([], {"CAMERA": "nosuch"}, "unknown camera driver 'nosuch'"),
        ([], {"CAMSTREAM_PORT": "http"}, "argument --port: 'http' is not a whole number"),
        (["--fps", "0"], {}, "argument --fps: '0' is out of range (frames per second, 0.01-120)"),
        (["--fps", "nan"], {}, "--fps"),
        (["--quality", "500"], {}, "--quality"),
        (["--width", "-1"], {}, "--width"),
        (["--log-level", "chatty"], {}, "--log-level"),
        (["--token", "short"], {}, "a token is at least 8"),
        (["--auth-file", "/nonexistent"], {}, "/nonexistent: No such file"),
        (["--bus-auth", "user:"], {}, "--bus-auth"),
        ([], {"CAMSTREAM_BUS_AUTH": "a b"}, "--bus-auth"),
        (["--bus-auth", "a:b", "--bus-auth-file", "/etc/hostname"], {}, "not allowed with argument"),
        (["--base-path", "/a b"], {}, "--base-path"),
        (["--frame-ancestors", "https://a.example; script-src *"], {}, "argument --frame-ancestors: 'https"),
        ([], {"CAMSTREAM_FRAME_ANCESTORS": "'none' 'self'"}, "'none' cannot be combined"),
        (["--camera", "a\x1bb=emulated"], {}, "camera name 'a\\x1bb'"),
        (["--bogus"], {}, "unrecognized arguments"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, env, message):
    assert_one_line_error(run_cli(*args, env=env), message)


@pytest.mark.slow
def test_the_two_forms_of_a_secret_exclude_each_other(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("user:0123456789\n")
    argv = ["--auth", "user:pw", "--auth-file", str(secret)]
    assert_one_line_error(run_cli(*argv), "argument --auth-file: not allowed with argument --auth")
    argv = ["--token-file", str(secret), "--token", "0123456789"]
    assert "argument --token: not allowed with argument --token-file" in exit_line(argv)


# -- --help and the README ------------------------------------------------------
@pytest.mark.slow
def test_help_lists_every_option_and_group():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in OPTIONS:
        assert re.search(rf"^\s+{option.flag}\b", result.stdout, re.MULTILINE), option.flag
    for title in GROUPS.values():
        assert f"\n{title}:\n" in result.stdout
    assert "(default 8080)" in result.stdout and "16-8192 (default 640)" in result.stdout
    version = run_cli("--version")
    assert (version.returncode, version.stdout) == (0, f"camstream {server.__version__}\n")


def readme_options() -> list[tuple[str, str, list[str], str, str]]:
    """The README's table of options: (group, flag, environment variables, default, meaning) a row."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Options\n", 1)[1].split("\n#", 1)[0]
    rows, group = [], ""
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith(("|---", "| option |")):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        heading = re.fullmatch(r"\*\*(\w+)\*\*", cells[0])
        if heading:
            group = heading.group(1)
            continue
        for flag in re.findall(r"`(--[a-z-]+)", cells[0]):
            rows.append((group, flag, re.findall(r"`([A-Z][A-Z_]+)`", cells[1]), cells[2], cells[3]))
    return rows


def test_the_readme_lists_exactly_the_options_of_the_table():
    rows = readme_options()
    assert [flag for _group, flag, *_ in rows] == [o.flag for o in OPTIONS] + ["--version", "--help"]
    for group, flag, env, default, meaning in rows:
        option = BY_FLAG.get(flag)
        if option is None:
            continue
        assert group == option.group, flag
        assert env == list(option.env_names), flag
        shown = default.replace("`", "")
        assert shown == option.shown_default or shown.startswith(option.shown_default + ":"), flag
        if option.limit:
            assert f"{option.limit.low:g}-{option.limit.high:g}" in meaning, flag


@pytest.mark.parametrize(
    "text",
    [
        "*",
        "'none'",
        "'self'",
        "'SELF' https:",
        "https://dash.example",
        "http://*.example.com:8443",
        "a.example/p/",
    ],
)
def test_frame_ancestors_takes_csp_source_lists(text):
    assert parse_settings(["--frame-ancestors", text], env={}).frame_ancestors == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "give a CSP source list"),
        ("'none' https://a.example", "'none' cannot be combined"),
        ("https://a.example;", "is not a CSP source"),
        ("https://a.example,https://b.example", "is not a CSP source"),
        ("'unsafe-inline'", "is not a CSP source"),
        ("https://a.example\r\nX-Evil: 1", "control characters are not allowed"),
    ],
)
def test_frame_ancestors_refuses_what_is_not_a_source_list(text, message):
    assert message in exit_line(["--frame-ancestors", text])


def test_the_help_says_the_token_length_what_origins_cover_and_that_timeouts_are_seconds():
    text = build_parser({}).format_help()
    flat = " ".join(text.split())
    assert "--token TOKEN also accept this token" in flat and "at least 8 printable ASCII characters" in flat
    assert "open the WebSocket and fetch() the streams and snapshots (CORS" in flat
    for flag in ("--stall-timeout", "--idle-timeout", "--snapshot-timeout", "--record-segment"):
        assert f"{flag} SECONDS" in flat, flag


def readme_commands() -> list[str]:
    """Every shell command of the README: the lines of its ``sh`` blocks (continuations
    joined) and its inline code that runs python, pip or server.py."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        commands += [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]
    inline = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    for code in re.findall(r"`([^`]+)`", inline):
        if re.search(r"(^|[\s/])(python3?|pip|server\.py)\b", code) and " " in code:
            commands.append(code)
    return commands


def test_the_readmes_commands_use_the_venv():
    # A fresh Debian has no `python`, and tornado is only in .venv: after the
    # first install command, python and pip are the venv's.
    commands = readme_commands()
    assert commands[0].startswith("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python")
    for command in commands[1:]:
        words = shlex.split(command, comments=True)
        for i, word in enumerate(words):
            assert word not in ("python", "pip", "pip3"), command
            assert word != "python3" or words[i + 1 : i + 3] == ["-m", "venv"], command


def test_the_readmes_server_commands_parse(tmp_path):
    (tmp_path / "cameras.toml").write_text('[cameras.pi]\ndriver = "emulated"\n')
    seen = 0
    for command in readme_commands():
        words = shlex.split(command.split("&&")[-1], comments=True)
        if "server.py" not in words:
            continue
        env = dict(word.split("=", 1) for word in words[: words.index("server.py") - 1])
        argv = [
            w.replace("cameras.toml", str(tmp_path / "cameras.toml"))
            for w in words[words.index("server.py") + 1 :]
        ]
        parse_settings(argv, env=env)  # exits 2 on an option it does not take
        seen += 1
    assert seen >= 5
