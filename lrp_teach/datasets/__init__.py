"""Data sets used by the book. Everything is generated or bundled; nothing is downloaded."""

from .digits import Digits, add_watermark, load_digits

__all__ = ["Digits", "add_watermark", "load_digits"]
