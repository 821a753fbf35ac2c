"""The conformance table: every case's verdict and error path (see ``table.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

# Registers the message types the cases name in ``@type``.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.http.original_ip_detection.custom_header.v3 import (  # noqa: F401
    custom_header_pb2,
)
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (  # noqa: F401
    client_side_weighted_round_robin_pb2,
)
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from google.protobuf import empty_pb2, json_format  # noqa: F401
from tests.unit.resources.conformance import (
    cluster_cases,
    endpoint_cases,
    listener_cases,
    route_cases,
    server_listener_cases,
)
from tests.unit.resources.conformance.table import Case
from xds.type.v3 import typed_struct_pb2  # noqa: F401

from proxyless.resources.parse import (
    decode_cluster,
    decode_cluster_load_assignment,
    decode_listener,
    decode_route_configuration,
)

CASES: list[Case] = [
    *cluster_cases.CASES,
    *endpoint_cases.CASES,
    *listener_cases.CASES,
    *route_cases.CASES,
    *server_listener_cases.CASES,
]

_DECODERS: dict[str, tuple[Any, Any]] = {
    "Cluster": (cluster_pb2.Cluster, decode_cluster),
    "ClusterLoadAssignment": (endpoint_pb2.ClusterLoadAssignment, decode_cluster_load_assignment),
    "Listener": (listener_pb2.Listener, decode_listener),
    "RouteConfiguration": (route_pb2.RouteConfiguration, decode_route_configuration),
}

_DOCS = Path(__file__).resolve().parents[4] / "docs" / "resources.md"


def decode(case: Case) -> tuple[bool, Any, tuple[str, ...]]:
    """(accepted, model, errors) for ``case``'s resource, through its ``decode_*``."""
    message, decoder = _DECODERS[case.kind]
    msg = json_format.ParseDict(case.resource, message())
    if case.tweak is not None:
        case.tweak(msg)
    result = decoder(msg.SerializeToString())
    return result.value is not None, result.value, tuple(result.errors)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_verdict(case: Case) -> None:
    accepted, _, errors = decode(case)
    verdict = "accept" if accepted else "nack"
    assert verdict == case.proxyless, errors
    if not accepted and case.path:
        paths = [e.split(": ", 1)[0] for e in errors]
        assert any(p.startswith(case.path) for p in paths), (case.path, errors)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_nack_names_a_path() -> None:
    missing = [c.id for c in CASES if c.proxyless == "nack" and not c.path]
    assert missing == []


def test_every_difference_is_documented() -> None:
    documented = set(re.findall(r"`((?:cds|eds|lds|rds)-[a-z0-9-]+)`", _DOCS.read_text()))
    differing = {c.id for c in CASES if c.differs}
    assert differing - documented == set()
    assert documented - {c.id for c in CASES} == set()
