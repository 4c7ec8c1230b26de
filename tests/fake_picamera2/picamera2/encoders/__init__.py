"""Fake ``picamera2.encoders``: the names the real package exports that camstream uses."""

from .encoder import Encoder, Quality
from .mjpeg_encoder import MJPEGEncoder

__all__ = ["Encoder", "MJPEGEncoder", "Quality"]
