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
from .previews import NullPreview

_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


class Preview(Enum):
    NULL = NullPreview
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
        # The event loop (a NullPreview's thread) and what it works on, as in the real one.
        self._preview: Any = None
        self._event_loop_running = False
        self._preview_stopped = threading.Event()
        self.lock = threading.Lock()
        self._requestslock = threading.Lock()
        self._requests: list[FakeRequest] = []
        self._job_list: list[_Job] = []
        self._notify = threading.Event()  # the real one's notifyme pipe
        # The sensor: libcamera's side, completing requests at the frame rate.
        self._sensor: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._sensor_frames = 0
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
        remove = list(self._encoders if encoders is None else [encoders])
        for encoder in remove:
            encoder.stop()
        with self.lock:
            for encoder in remove:
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

    # -- the event loop -----------------------------------------------------------
    def attach_preview(self, preview: Any) -> None:
        if self._preview:
            raise RuntimeError("Preview is already running")
        self._preview = preview
        self._event_loop_running = True

    def detach_preview(self) -> None:
        self._preview = None
        self._event_loop_running = False
        self._preview_stopped.set()

    def start_preview(self, preview: Any = None, **kwargs: Any) -> None:
        STATE.record("start_preview", preview=preview)
        if self._event_loop_running:
            raise RuntimeError("An event loop is already running")
        if preview is False or preview is None:
            preview = Preview.NULL.value(**kwargs)
        elif isinstance(preview, Preview):
            preview = preview.value(**kwargs)
        self._preview_stopped.clear()
        preview.start(self)

    def stop_preview(self) -> None:
        STATE.record("stop_preview")
        if self._preview is None:
            raise RuntimeError("No preview specified.")
        try:
            self._preview.stop()
            self._preview_stopped.wait()
        except Exception as e:
            raise RuntimeError("Unable to stop preview.") from e

    def process_requests(self, display: Any) -> None:
        """The event loop's work (its thread): run the jobs dispatched to it, then hand
        each completed request to every encoder.  An encoder's exception goes out of
        here, and the real NullPreview's thread dies of it."""
        with self._requestslock:
            requests, self._requests = self._requests, []
        self.frames += len(requests)
        finished = []
        with self.lock:
            while self._job_list:
                if self._job_list[0].execute():
                    finished.append(self._job_list.pop(0))
                else:
                    break
            for request in requests:
                for encoder in list(self._encoders):
                    encoder.encode(self.encode_stream_name, request)
        for job in finished:
            job.signal()

    def dispatch_functions(
        self, functions: list[Any], wait: Any, signal_function: Any = None, immediate=False
    ):
        """Queue ``functions`` for the event loop; with ``wait`` True, wait for them.  The
        real one waits for ever (``Future.result(None)``), so a dead event loop hangs the
        caller; the fake gives up after :data:`FOREVER_S` with TimeoutError, so a test ends."""
        job = _Job(functions)
        with self.lock:
            self._job_list.append(job)
        if immediate:
            self._notify.set()
        if wait:
            return job.get_result(FOREVER_S)
        return job

    # -- the sensor -------------------------------------------------------------
    def start_(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self.started = True
        self._stop_event = threading.Event()
        self._sensor = threading.Thread(target=self._run, args=(self._stop_event,), daemon=True)
        self._sensor.start()

    def start(self, config: Any = None, show_preview: Any = False) -> None:
        STATE.record("start")
        if self.camera_config is None and config is None:
            config = "preview"
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if show_preview is not None and not self._event_loop_running:
            self.start_preview(show_preview)
        self.start_()

    def stop_(self, request: Any = None) -> tuple[bool, None]:
        if self.started:
            self._stop_event.set()
            if self._sensor is not None and self._sensor is not threading.current_thread():
                self._sensor.join(5)
            self._sensor = None
            self.started = False
            with self._requestslock:
                self._requests = []
        return (True, None)

    def stop(self) -> None:
        STATE.record("stop")
        if not self.started:
            return
        if self._preview is not None and self._event_loop_running:
            self.dispatch_functions([self.stop_], wait=True, immediate=True)
        else:
            self.stop_()

    def close(self) -> None:
        STATE.record("close")
        if self._preview:
            self.stop_preview()
        if not self.is_open:
            return
        self.stop()
        with STATE.lock:
            STATE.acquired.discard(self.camera_idx)
        self.is_open = False
        self.camera = None
        self.camera_config = None

    def _run(self, stop: threading.Event) -> None:
        """The sensor's thread: a request completed every frame interval, the event
        loop told.  Unprocessed requests hold the camera's buffers: beyond
        ``buffer_count`` of them the oldest is dropped, as libcamera runs short."""
        assert self.camera_config is not None
        size = self.camera_config["main"]["size"]
        buffers = self.camera_config.get("buffer_count", 6)
        interval_s = self.camera_config["controls"]["FrameDurationLimits"][0] / 1_000_000
        due = time.monotonic()
        while not stop.is_set():
            if STATE.delivering.is_set():
                image = Image.new("RGB", size, _COLOURS[self._sensor_frames % len(_COLOURS)])
                self._sensor_frames += 1
                with self._requestslock:
                    self._requests = [
                        *self._requests[-(buffers - 1) :],
                        FakeRequest(image, time.monotonic_ns()),
                    ]
                self._notify.set()
            due += interval_s
            stop.wait(max(0.0, due - time.monotonic()))


#: How long the fake waits for its event loop to run a dispatched job (the real: for ever).
FOREVER_S = 30.0


class _Job:
    """Functions for the event loop to run, in order; each returns ``(done, result)``."""

    def __init__(self, functions: list[Any]) -> None:
        self._functions = list(functions)
        self._done = threading.Event()
        self._result: Any = None

    def execute(self) -> bool:
        while self._functions:
            done, self._result = self._functions[0]()
            if not done:
                return False
            self._functions.pop(0)
        return True

    def signal(self) -> None:
        self._done.set()

    def get_result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError("the camera's event loop did not run the job")
        return self._result
