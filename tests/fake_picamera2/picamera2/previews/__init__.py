"""Fake ``picamera2.previews``: the NULL preview, which runs the camera's event loop."""

from .null_preview import NullPreview

__all__ = ["NullPreview"]
