"""The fake ``Picamera2`` class: the real one's recording surface, a thread for a sensor."""

from __future__ import annotations

import os
import threading
import time
from enum import Enum
from typing import Any

from PIL import Image

from ._fake import STATE
from .encoders import Encoder, Quality
from .outputs import FileOutput

_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


class Preview(Enum):
    NULL = 0
    DRM = 1
    QT = 2
    QTGL = 3


class FakeRequest:
    """What the real library hands an encoder: a completed request with metadata."""

    def __init__(self, image: Image.Image, sensor_timestamp_ns: int) -> None:
        self.image = image
        self.metadata = {"SensorTimestamp": sensor_timestamp_ns}

    def get_metadata(self) -> dict[str, Any]:
        return self.metadata


class Picamera2:
    """Opens camera ``camera_num``; raises RuntimeError, as the real one does, when it
    is missing or already open (the real one also logs that at ERROR; the fake does not)."""

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None) -> None:
        STATE.record("Picamera2", camera_num=camera_num)
        with STATE.lock:
            if not 0 <= camera_num < STATE.cameras or camera_num in STATE.acquired:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            STATE.acquired.add(camera_num)
        self.camera_idx = camera_num
        self.is_open = True
        self.camera = object()
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.encode_stream_name = "main"
        self.sensor_resolution = (4608, 2592)
        self._encoders: set[Encoder] = set()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self.frames = 0

    # -- configurations -------------------------------------------------------
    @staticmethod
    def _stream(defaults: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        for key in updates:
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
        return {**defaults, **updates}

    def create_video_configuration(
        self,
        main: dict | None = None,
        lores: dict | None = None,
        raw: dict | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
    ) -> dict[str, Any]:
        STATE.record("create_video_configuration", main=main, lores=lores, controls=controls)
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        main_stream = self._stream({"format": "XBGR8888", "size": (1280, 720)}, main or {})
        assert main_stream is not None
        lores_stream = self._stream({"format": "YUV420", "size": main_stream["size"]}, lores)
        return {
            "use_case": "video",
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_stream,
            "lores": lores_stream,
            "raw": None,
            "controls": {"NoiseReductionMode": "Fast", "FrameDurationLimits": (33333, 33333)}
            | (controls or {}),
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: Any = "preview") -> None:
        STATE.record("configure", camera_config=camera_config)
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config == "video":
            camera_config = self.create_video_configuration()
        if not isinstance(camera_config, dict):
            raise RuntimeError("the fake only takes a configuration dict or 'video'")
        width, height = camera_config["main"]["size"]
        if width % 2 or height % 2:
            raise RuntimeError("width and height should be even")
        controls = dict(camera_config["controls"])
        if "FrameRate" in controls:  # the real Controls turns FrameRate into frame durations
            duration = int(1_000_000 / controls.pop("FrameRate"))
            controls["FrameDurationLimits"] = (duration, duration)
        self.camera_config = {**camera_config, "controls": controls}

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    # -- encoders ---------------------------------------------------------------
    def start_encoder(
        self,
        encoder: Encoder | None = None,
        output: Any = None,
        pts: Any = None,
        quality: Any = None,
        name=None,
    ) -> None:
        STATE.record("start_encoder", encoder=encoder, output=output, quality=quality, name=name)
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            if isinstance(output, str):
                output = FileOutput(output, pts=pts)
            encoder.output = output
        streams = self.camera_configuration()
        name = name or self.encode_stream_name
        if streams is None or streams.get(name) is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        encoder.name = name
        encoder.width, encoder.height = streams[name]["size"]
        encoder.format = streams[name]["format"]
        duration = streams["controls"]["FrameDurationLimits"][0]
        if getattr(encoder, "framerate", None) is None:
            encoder.framerate = 1_000_000 / max(duration, 33333)
        if quality is not None:
            encoder.bitrate = None  # an explicit quality overrides any bitrate
        else:
            quality = Quality.MEDIUM
        encoder._setup(quality)
        encoder.start()
        self._encoders.add(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        STATE.record("stop_encoder")
        for encoder in list(self._encoders if encoders is None else [encoders]):
            encoder.stop()
            self._encoders.discard(encoder)

    def start_recording(
        self,
        encoder: Encoder,
        output: Any,
        pts: Any = None,
        config: Any = None,
        quality: Any = None,
        name=None,
    ) -> None:
        STATE.record(
            "start_recording", encoder=encoder, output=output, config=config, quality=quality, name=name
        )
        if self.camera_config is None and config is None:
            config = "video"
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        self.start()

    def stop_recording(self) -> None:
        STATE.record("stop_recording")
        # A test may make the release hang, as a wedged libcamera pipeline does.
        time.sleep(float(os.environ.get("FAKE_PICAMERA2_STOP_DELAY_S", "0")))
        self.stop()
        self.stop_encoder()

    # -- the sensor -------------------------------------------------------------
    def start(self, config: Any = None, show_preview: bool = False) -> None:
        STATE.record("start")
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self.started = True
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop_event,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        STATE.record("stop")
        if not self.started:
            return
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self.started = False

    def close(self) -> None:
        STATE.record("close")
        if not self.is_open:
            return
        self.stop()
        with STATE.lock:
            STATE.acquired.discard(self.camera_idx)
        self.is_open = False
        self.camera = None
        self.camera_config = None

    def _run(self, stop: threading.Event) -> None:
        assert self.camera_config is not None
        size = self.camera_config["main"]["size"]
        interval_s = self.camera_config["controls"]["FrameDurationLimits"][0] / 1_000_000
        due = time.monotonic()
        while not stop.is_set():
            if STATE.delivering.is_set():
                image = Image.new("RGB", size, _COLOURS[self.frames % len(_COLOURS)])
                request = FakeRequest(image, time.monotonic_ns())
                self.frames += 1
                for encoder in list(self._encoders):
                    encoder.encode(self.encode_stream_name, request)
            due += interval_s
            stop.wait(max(0.0, due - time.monotonic()))
