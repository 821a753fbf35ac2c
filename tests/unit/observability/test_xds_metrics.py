"""gRFC A78 xDS client metrics: the pure mapping from the client's state to
attributes (cache state, authority, resource type), and the counters fed
with decoded responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from tests.unit.observability.conftest import Metrics

from proxyless.observability import xds_metrics
from proxyless.xds_client import ClientStatus, DecodeResult
from proxyless.xds_client.protocol import DecodedResponse

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


@pytest.mark.parametrize(
    ("status", "cached", "state"),
    [
        pytest.param(ClientStatus.REQUESTED, False, "requested", id="requested"),
        pytest.param(ClientStatus.DOES_NOT_EXIST, False, "does_not_exist", id="does-not-exist"),
        pytest.param(ClientStatus.ACKED, True, "acked", id="acked"),
        pytest.param(ClientStatus.NACKED, False, "nacked", id="nacked"),
        pytest.param(ClientStatus.NACKED, True, "nacked_but_cached", id="nacked-but-cached"),
    ],
)
def test_cache_state(status: ClientStatus, cached: bool, state: str) -> None:
    assert xds_metrics.cache_state(status.value, cached) == state
    assert state in xds_metrics.CACHE_STATES


def test_cache_state_rejects_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown client status 'STALE'"):
        xds_metrics.cache_state("STALE", False)


@pytest.mark.parametrize(
    ("name", "authority"),
    [
        pytest.param("svc:80", "#old", id="old-style"),
        pytest.param(
            "xdstp://td.example.com/envoy.config.listener.v3.Listener/svc",
            "td.example.com",
            id="xdstp",
        ),
        pytest.param("xdstp:///envoy.config.cluster.v3.Cluster/c", "", id="xdstp-empty-authority"),
    ],
)
def test_authority_of(name: str, authority: str) -> None:
    assert xds_metrics.authority_of(name) == authority


@pytest.mark.parametrize(
    ("type_url", "name"),
    [
        pytest.param(LISTENER, "envoy.config.listener.v3.Listener", id="prefixed"),
        pytest.param(
            "envoy.config.cluster.v3.Cluster", "envoy.config.cluster.v3.Cluster", id="bare"
        ),
    ],
)
def test_resource_type_name(type_url: str, name: str) -> None:
    assert xds_metrics.resource_type_name(type_url) == name


@dataclass(frozen=True)
class Status:
    type_url: str
    name: str
    status: ClientStatus
    cached: bool


def test_resource_counts_group_by_authority_state_and_type() -> None:
    statuses = [
        Status(LISTENER, "a:80", ClientStatus.ACKED, True),
        Status(LISTENER, "b:80", ClientStatus.ACKED, True),
        Status(LISTENER, "missing:80", ClientStatus.DOES_NOT_EXIST, False),
        Status(CLUSTER, "c", ClientStatus.NACKED, True),
        Status(
            CLUSTER, "xdstp://td/envoy.config.cluster.v3.Cluster/d", ClientStatus.REQUESTED, False
        ),
    ]
    assert xds_metrics.resource_counts("node-1", statuses) == {
        ("node-1", "#old", "acked", "envoy.config.listener.v3.Listener"): 2,
        ("node-1", "#old", "does_not_exist", "envoy.config.listener.v3.Listener"): 1,
        ("node-1", "#old", "nacked_but_cached", "envoy.config.cluster.v3.Cluster"): 1,
        ("node-1", "td", "requested", "envoy.config.cluster.v3.Cluster"): 1,
    }


@pytest.mark.parametrize(
    ("summaries", "expected"),
    [
        pytest.param([], {}, id="no-server"),
        pytest.param(
            [{"server_uri": "cp:1", "last_error": None, "connected": False}],
            {("n", "cp:1"): 1},
            id="stream-created-not-yet-answered",
        ),
        pytest.param(
            [
                {"server_uri": "cp:1", "last_error": "UNAVAILABLE", "connected": False},
                {"server_uri": "cp:2", "last_error": None, "connected": True},
            ],
            {("n", "cp:1"): 0, ("n", "cp:2"): 1},
            id="one-failing",
        ),
    ],
)
def test_connected_by_server(summaries: list[dict[str, Any]], expected: dict[Any, int]) -> None:
    assert xds_metrics.connected_by_server("n", summaries) == expected


def _response(type_url: str, n: int) -> discovery_pb2.DiscoveryResponse:
    resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info="1", nonce="1")
    for _ in range(n):
        resp.resources.add(type_url=type_url)
    return resp


def test_resource_updates_count_every_resource_of_a_response(metrics: Metrics) -> None:
    # Four resources: two valid, one invalid by name, one undecodable (no result).
    decoded = DecodedResponse(
        results={
            "a": DecodeResult("a", object()),
            "b": DecodeResult("b", object()),
            "c": DecodeResult("c", None, ("bad field",)),
        },
        raws={},
        errors=["c: bad field", "resources[3]: could not decode"],
    )
    xds_metrics.resource_updates("node-1", "cp:1", _response(CLUSTER, 4), decoded)
    xds_metrics.resource_updates(
        "node-1",
        "cp:1",
        _response(CLUSTER, 2),
        DecodedResponse(
            results={"a": DecodeResult("a", object()), "b": DecodeResult("b", object())},
            raws={},
            errors=[],
        ),
    )
    attrs = {
        "grpc__target": "node-1",
        "grpc__xds__server": "cp:1",
        "grpc__xds__resource_type": "envoy.config.cluster.v3.Cluster",
    }
    assert metrics.value("grpc.xds_client.resource_updates_valid", **attrs) == 4
    assert metrics.value("grpc.xds_client.resource_updates_invalid", **attrs) == 2


def test_server_failure(metrics: Metrics) -> None:
    xds_metrics.server_failure("node-1", "cp:1")
    assert (
        metrics.value(
            "grpc.xds_client.server_failure", grpc__target="node-1", grpc__xds__server="cp:1"
        )
        == 1
    )
