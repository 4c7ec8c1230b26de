"""``/metrics``: the cameras and their viewers in the Prometheus text format.

The numbers are read from the feeds' status when Prometheus scrapes (a
collector, not counters updated per frame), so metrics cost nothing while
nobody asks, and every counter has the name it has in ``/status``.  The
process metrics (CPU, memory, open file descriptors) and the Python ones come
with ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from feed import FrameFeed
from handlers.base import BaseHandler
from handlers.kiosks import STATES, Kiosks

VIEWER_KINDS = ("mjpeg", "ws")


#: Counters of each camera, as named in its ``/status`` (``camstream_NAME_total`` here).
FEED_COUNTERS = {
    "frames_captured": "Live frames the camera produced.",
    "frames_sent": "Frames written to viewers.",
    "bytes_sent": "Bytes of frames written to viewers.",
    "frames_skipped": "New frames a busy viewer skipped.",
    "frames_capped": "Frames a viewer's frame-rate cap held back.",
    "frames_repeated": "Still frames sent again to keep a stream alive.",
    "frames_same": "New frames not sent: the same bytes as the previous one.",
    "camera_starts": "Times the camera was started.",
    "camera_failures": "Times the camera failed to open or capture.",
    "viewers_stalled": "Viewers disconnected for taking nothing.",
}
#: Counters of a recording camera, as named in its ``/status`` ``"recording"`` object.
RECORDING_COUNTERS = {
    "frames_recorded": "Frames written to recordings.",
    "frames_not_recorded": "Frames the recording lost (disk behind or failing).",
    "bytes_recorded": "Bytes written to recordings.",
    "segments_recorded": "Recording segments finished.",
}


#: Counters of the message bus, as named in ``/status``'s ``"publishing"`` (an
#: origin) and ``"bus"`` (an edge's camera) objects.
BUS_COUNTERS = {
    "frames_published": "Frames published to the bus (an origin).",
    "frames_not_published": "Frames the bus did not take (replaced by a newer one, or disconnected).",
    "frames_received": "Frames received from the bus (an edge).",
    "frames_dropped": "Frames the edge's subscription dropped for being late.",
    "bus_reconnects": "Times the connection to the bus was lost and made again.",
}
#: An edge's ``"bus"`` counts, by reason, of ``frames_rejected_by_reason`` (their sum is
#: its ``frames_rejected``): one counter with a ``reason`` label.
REJECTED_DOC = (
    "Bus messages an edge dropped for failing its checks (not a JPEG, cut short, too large, "
    "bad headers), by reason."
)


class FeedCollector(Collector):
    """Per camera, the counters of its ``/status`` under the same names
    (:data:`FEED_COUNTERS`, :data:`RECORDING_COUNTERS`), viewers by kind, and
    whether the camera is running and online."""

    def __init__(self, feeds: Mapping[str, FrameFeed]) -> None:
        self.feeds = feeds

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counters = {
            key: CounterMetricFamily(f"camstream_{key}", doc, labels=["camera"])
            for key, doc in {**FEED_COUNTERS, **RECORDING_COUNTERS}.items()
        }
        viewers = GaugeMetricFamily("camstream_viewers", "Viewers attached.", labels=["camera", "kind"])
        online = GaugeMetricFamily(
            "camstream_camera_online", "1 if the camera delivers frames.", labels=["camera"]
        )
        running = GaugeMetricFamily("camstream_camera_running", "1 if the camera is on.", labels=["camera"])
        by_variant = GaugeMetricFamily(
            "camstream_variant_viewers",
            "Viewers of each variant (size and quality) of a camera; source: its own frames.",
            labels=["camera", "variant"],
        )
        encoded = CounterMetricFamily(
            "camstream_frames_encoded", "Frames a variant encoded.", labels=["camera", "variant"]
        )
        encode_cpu = CounterMetricFamily(
            "camstream_encode_cpu_seconds",
            "CPU time a variant spent decoding and encoding.",
            labels=["camera", "variant"],
        )
        running_variants = GaugeMetricFamily(
            "camstream_variant_running", "1 while a variant encodes.", labels=["camera", "variant"]
        )
        bus_counters = {
            key: CounterMetricFamily(f"camstream_{key}", doc, labels=["camera"])
            for key, doc in BUS_COUNTERS.items()
        }
        rejected = CounterMetricFamily("camstream_frames_rejected", REJECTED_DOC, labels=["camera", "reason"])
        edges = GaugeMetricFamily(
            "camstream_edge_viewers", "Viewers of the edges heard from (an origin).", labels=["camera"]
        )
        writing = GaugeMetricFamily(
            "camstream_recording_writing",
            "1 while a recording camera's segments are written; 0 while recording fails "
            "(a full disk: /status recording.state says which).",
            labels=["camera"],
        )
        parts_dropped = CounterMetricFamily(
            "camstream_relay_parts_dropped",
            "Parts an mjpeg (relay) camera dropped for not being whole JPEGs.",
            labels=["camera"],
        )
        steps = CounterMetricFamily(
            "camstream_adapt_steps",
            "Viewers moved to a smaller (down) or larger (up) variant by adaptation.",
            labels=["camera", "direction"],
        )
        for name, feed in self.feeds.items():
            status = feed.status()
            by_variant.add_metric([name, "source"], feed.subscriber_count)
            variants = status.get("variants") or {}
            for label, variant in variants.get("sizes", {}).items():
                by_variant.add_metric([name, label], variant["subscribers"])
                encoded.add_metric([name, label], variant["frames_encoded"])
                encode_cpu.add_metric([name, label], variant["encode_cpu_seconds"])
                running_variants.add_metric([name, label], 1 if variant["running"] else 0)
            for direction, count in variants.get("adapt_steps", {"down": 0, "up": 0}).items():
                steps.add_metric([name, direction], count)
            for part in (status.get("publishing"), status.get("bus")):
                for key in BUS_COUNTERS.keys() & (part or {}).keys():
                    bus_counters[key].add_metric([name], part[key])
            for reason, count in (status.get("bus") or {}).get("frames_rejected_by_reason", {}).items():
                rejected.add_metric([name, reason], count)
            if status.get("publishing"):
                edges.add_metric([name], status["publishing"]["edge_viewers"])
            for key in FEED_COUNTERS:
                counters[key].add_metric([name], status[key])
            recording = status.get("recording")
            if recording:
                for key in RECORDING_COUNTERS:
                    counters[key].add_metric([name], recording[key])
                writing.add_metric([name], 1 if recording.get("state") == "recording" else 0)
            relay = status.get("relay")
            if relay:
                parts_dropped.add_metric([name], relay["parts_dropped"])
            kinds = status["viewers"]
            for kind in sorted(set(VIEWER_KINDS) | set(kinds)):
                viewers.add_metric([name, kind], kinds.get(kind, 0))
            online.add_metric([name], 1 if status["online"] else 0)
            running.add_metric([name], 1 if status["running"] else 0)
        yield from counters.values()
        yield from (viewers, online, running, by_variant, encoded, encode_cpu, running_variants, steps)
        # Only on servers with a bus (an origin or an edge): no empty families elsewhere.
        yield from (family for family in (*bus_counters.values(), rejected, edges) if family.samples)
        # Only where a camera records, or relays.
        yield from (family for family in (writing, parts_dropped) if family.samples)


class KioskCollector(Collector):
    """The kiosks heard from (:mod:`handlers.kiosks`): how many in each state, and
    the age of the oldest heartbeat of those not gone (only while there is one)."""

    def __init__(self, kiosks: Kiosks) -> None:
        self.kiosks = kiosks

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = GaugeMetricFamily(
            "camstream_kiosks", "Kiosks heard from, by state (live, silent, gone).", labels=["state"]
        )
        for state in STATES:
            counts.add_metric([state], self.kiosks.counts()[state])
        yield counts
        oldest = self.kiosks.oldest_heartbeat_age_s()
        if oldest is not None:
            yield GaugeMetricFamily(
                "camstream_kiosk_oldest_heartbeat_age_seconds",
                "Seconds since the oldest last heartbeat of the kiosks not gone.",
                value=oldest,
            )


class ListeningCollector(Collector):
    """The listening sockets' shortages of file descriptors (``listening.Listener.status``):
    how often accepting paused, and the connections refused for it."""

    def __init__(self, listening: Callable[[], Mapping[str, Any]]) -> None:
        self.listening = listening

    def collect(self) -> Iterator[CounterMetricFamily]:
        status = self.listening()
        yield CounterMetricFamily(
            "camstream_accept_pauses",
            "Pauses of accepting connections for want of file descriptors (each 0.1 to 1 s).",
            value=status["accept_pauses"],
        )
        yield CounterMetricFamily(
            "camstream_connections_refused",
            "Connections answered 503 (or closed, on a TLS port) for want of file descriptors.",
            value=status["connections_refused"],
        )


def make_registry(
    feeds: Mapping[str, FrameFeed],
    kiosks: Kiosks | None = None,
    listening: Callable[[], Mapping[str, Any]] | None = None,
) -> CollectorRegistry:
    """A registry of the feeds, the kiosks, the listening sockets (``listening``: their
    status, see :class:`ListeningCollector`) and this process (one per application)."""
    registry = CollectorRegistry()
    registry.register(FeedCollector(feeds))
    if kiosks is not None:
        registry.register(KioskCollector(kiosks))
    if listening is not None:
        registry.register(ListeningCollector(listening))
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
