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

As in the real library, ``start()`` starts a NULL preview whose thread runs the
camera's event loop (``process_requests``: dispatched jobs, then each completed
request to the encoders), and ``stop()`` asks that loop to stop the camera and
waits for it; ``stop_preview()`` ends the loop, after which ``stop()`` stops the
camera on the caller's thread; ``close()`` stops the preview first.  An
exception in ``process_requests`` (an encoder's) ends the loop's thread for
good, as the real NullPreview's re-raise does (the real one also logs it at
ERROR with its traceback; the fake records it), and a later ``stop()`` then
waits for a loop that is gone: for ever in the real library, ``FOREVER_S`` in
the fake.

Instead of a sensor, a thread completes a request with a solid-colour picture
(a new colour each frame) at the configured frame rate and the "encoder" makes
a real JPEG of it with Pillow.  Every call is recorded in
``picamera2._fake.STATE`` for the tests, which can also stall the camera, hold
it as if another process did, make its release slow
(``$FAKE_PICAMERA2_STOP_DELAY_S``) or make its encoder fail mid-stream
(``$FAKE_PICAMERA2_FAULT_FILE``: see ``FakeState.encoder_fault``).  Put
``tests/fake_picamera2`` first on ``sys.path`` to use it.
"""

from .picamera2 import Picamera2, Preview

__all__ = ["Picamera2", "Preview"]
