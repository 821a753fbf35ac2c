"""The metrics fixture of the observability tests: an OpenTelemetry SDK
``MeterProvider`` with an ``InMemoryMetricReader``, handed to proxyless with
``settings.configure(meter_provider=...)`` (never as the global provider,
which a process can set only once) and taken back after the test.

:class:`Metrics` reads what was recorded: :meth:`Metrics.value` sums the
points of one metric whose attributes include the given ones (a counter's
cumulative total, a gauge's current values), :meth:`Metrics.points` lists
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from proxyless.observability import settings


class Metrics:
    """What the in-memory reader holds (see the module docstring)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def points(self, name: str, **attrs: Any) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, value)`` of every point of ``name`` matching ``attrs``
        (attribute names with dots are given with ``__``: ``grpc__target``)."""
        want = {k.replace("__", "."): v for k, v in attrs.items()}
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], float]] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        got = dict(point.attributes or {})
                        if all(got.get(k) == v for k, v in want.items()):
                            out.append((got, point.value))
        return out

    def value(self, name: str, **attrs: Any) -> float:
        """The sum of the matching points' values (0 when there is none)."""
        return sum(v for _, v in self.points(name, **attrs))


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    previous = settings.settings.metrics
    settings.configure(meter_provider=provider, metrics=True)
    try:
        yield Metrics(reader)
    finally:
        settings.configure(meter_provider=None, metrics=previous)
        provider.shutdown()
