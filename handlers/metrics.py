"""``/metrics``: the cameras and their viewers in the Prometheus text format.

The numbers are read from the feeds and cameras when Prometheus scrapes (a
collector, not counters updated per frame), so metrics cost nothing while
nobody asks.  The process metrics (CPU, memory, open file descriptors) and
the Python ones come with ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cameras.feed import FrameFeed
from handlers.base import BaseHandler
from recording.recorder import Recorder

VIEWER_KINDS = ("mjpeg", "ws")


class FeedCollector(Collector):
    """Per camera: frames captured, sent, skipped, repeated; bytes sent; viewers by
    kind; camera starts and failures; viewers dropped for stalling; online; and
    for a recording camera, frames and bytes recorded, frames lost, segments."""

    def __init__(self, feeds: Mapping[str, FrameFeed], recorders: Mapping[str, Recorder]) -> None:
        self.feeds = feeds
        self.recorders = recorders

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"camstream_{name}", doc, labels=["camera"])

        captured = counter("frames_captured", "Live frames the camera produced.")
        sent = counter("frames_sent", "Frames written to viewers.")
        skipped = counter("frames_skipped", "New frames a busy viewer skipped.")
        repeated = counter("frames_repeated", "Still frames sent again to keep a stream alive.")
        sent_bytes = counter("bytes_sent", "Bytes of frames written to viewers.")
        starts = counter("camera_starts", "Times the camera was started.")
        failures = counter("camera_failures", "Times the camera failed to open or capture.")
        stalled = counter("viewers_stalled", "Viewers disconnected for taking nothing.")
        viewers = GaugeMetricFamily("camstream_viewers", "Viewers attached.", labels=["camera", "kind"])
        online = GaugeMetricFamily(
            "camstream_camera_online", "1 if the camera delivers frames.", labels=["camera"]
        )
        running = GaugeMetricFamily("camstream_camera_running", "1 if the camera is on.", labels=["camera"])
        recorded = counter("frames_recorded", "Frames written to recordings.")
        not_recorded = counter("frames_not_recorded", "Frames the recording lost (disk behind or failing).")
        recorded_bytes = counter("bytes_recorded", "Bytes written to recordings.")
        segments = counter("segments_recorded", "Recording segments finished.")
        for name, feed in self.feeds.items():
            recorder = self.recorders.get(name)
            if recorder is not None and recorder.running:
                recorded.add_metric([name], recorder.frames_recorded)
                not_recorded.add_metric([name], recorder.frames_dropped)
                recorded_bytes.add_metric([name], recorder.bytes_written)
                segments.add_metric([name], recorder.segments_finished)
            camera = feed.camera
            captured.add_metric([name], getattr(camera, "frames_captured", 0))
            sent.add_metric([name], feed.frames_sent)
            skipped.add_metric([name], feed.frames_skipped)
            repeated.add_metric([name], feed.frames_repeated)
            sent_bytes.add_metric([name], feed.bytes_sent)
            starts.add_metric([name], feed.camera_starts)
            failures.add_metric([name], getattr(camera, "failures", 0))
            stalled.add_metric([name], feed.stalled_dropped)
            kinds = feed.viewers_by_kind()
            for kind in sorted(set(VIEWER_KINDS) | set(kinds)):
                viewers.add_metric([name, kind], kinds.get(kind, 0))
            online.add_metric([name], 1 if camera.online else 0)
            running.add_metric([name], 1 if camera.running else 0)
        yield from (captured, sent, skipped, repeated, sent_bytes, starts, failures, stalled)
        yield from (viewers, online, running, recorded, not_recorded, recorded_bytes, segments)


def make_registry(
    feeds: Mapping[str, FrameFeed], recorders: Mapping[str, Recorder] | None = None
) -> CollectorRegistry:
    """A registry of the feeds, the recorders (by camera name) and of this process
    (one per application)."""
    registry = CollectorRegistry()
    registry.register(FeedCollector(feeds, recorders or {}))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsHandler(BaseHandler):
    """``GET``/``HEAD``: the Prometheus text exposition of ``registry``."""

    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_no_cache()
        self.finish(generate_latest(self.registry))

    head = get
