"""Public test kit: a fake clock, resource builders and fixtures."""

from proxyless.testing.clock import FakeClock

__all__ = ["FakeClock"]
