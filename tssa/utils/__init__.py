"""Measurement helpers shared by tests and the benchmark harness (torch only)."""

from .memory import LiveTensorTracker

__all__ = ["LiveTensorTracker"]
