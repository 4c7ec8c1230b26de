"""Fake ``picamera2.outputs``."""

from .fileoutput import FileOutput
from .output import Output

__all__ = ["FileOutput", "Output"]
