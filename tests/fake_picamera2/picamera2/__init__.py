"""A stand-in for Raspberry Pi's picamera2 library, for tests on any machine.

It mirrors the part of the real API (github.com/raspberrypi/picamera2) that
camstream's driver calls, with the real names, arguments, defaults and call
order: ``Picamera2(camera_num)``, ``create_video_configuration(main=...,
controls=...)``, ``configure``, ``start_recording(encoder, output, pts=None,
config=None, quality=None, name=None)`` (which runs ``start_encoder`` and then
``start``), ``stop_recording`` (``stop`` and then ``stop_encoder``) and
``close``; ``encoders.MJPEGEncoder(bitrate=None)`` with ``Quality``; and
``outputs.FileOutput`` over an ``io.BufferedIOBase`` whose ``write`` gets each
JPEG through ``Output.outputframe(frame, keyframe, timestamp, packet, audio)``.

Instead of a sensor, a thread makes a solid-colour picture (a new colour each
frame) at the configured frame rate and the "encoder" makes a real JPEG of it
with Pillow.  Every call is recorded in ``picamera2._fake.STATE`` for the
tests, which can also stall the camera or hold it as if another process did.
Put ``tests/fake_picamera2`` first on ``sys.path`` to use it.
"""

from .picamera2 import Picamera2, Preview

__all__ = ["Picamera2", "Preview"]
