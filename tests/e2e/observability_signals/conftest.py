"""Fixtures for the metrics of the xDS client (gRFC A78) and the mesh
signals, end to end: the real ADS server, gRPC echo backends and Meshes of
``tests/e2e/conftest.py``; the one-service publisher, the fake-clock Mesh
and the proto builders of ``tests/e2e/resilience/conftest.py``; and the
in-memory OpenTelemetry reader of ``tests/unit/observability/conftest.py``
(configured before the Mesh is made, so its gauges exist from the start).
Every Mesh here has node id ``e2e-observability_signals``, the
``grpc.target`` of its A78 metrics.
"""

from __future__ import annotations

from tests.e2e.resilience.conftest import mesh as mesh
from tests.e2e.resilience.conftest import service as service
from tests.unit.observability.conftest import Metrics as Metrics
from tests.unit.observability.conftest import metrics as metrics

#: The Meshes' node id (``make_mesh`` names it after this folder).
NODE_ID = "e2e-observability_signals"
