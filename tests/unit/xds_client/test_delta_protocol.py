"""Delta xDS messages: the requests the client builds and the responses it decodes."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2

from proxyless.bootstrap import load_bootstrap
from proxyless.xds_client import DecodeResult, ResourceType
from proxyless.xds_client.fallback import ServerChain
from proxyless.xds_client.protocol import decode_delta_response, delta_request
from proxyless.xds_client.state import AuthorityState, ResourceState, ServerState, TypeState

CLUSTER_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _decode(data: bytes) -> DecodeResult:
    msg = cluster_pb2.Cluster.FromString(data)
    if msg.type == cluster_pb2.Cluster.STRICT_DNS:
        return DecodeResult(msg.name, None, ("type: STRICT_DNS is not supported",))
    return DecodeResult(msg.name, msg.alt_stat_name)


CDS = ResourceType(CLUSTER_URL, "CDS", True, _decode)


def _server(features: list[str]) -> ServerState:
    boot = load_bootstrap(
        {
            "xds_servers": [
                {
                    "server_uri": "cp:1",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": features,
                }
            ]
        }
    )
    return ServerState(boot.xds_servers[0])


def _setup(*names: str) -> tuple[ServerState, TypeState, AuthorityState]:
    ss = _server(["delta_xds"])
    auth = AuthorityState(ServerChain((ss.server,), 1))
    ts = ss.type_state(CDS)
    for name in names:
        res = ResourceState(CDS, name, ss, auth)
        ts.resources[name] = res
        auth.types.setdefault(CLUSTER_URL, {})[name] = res
    return ss, ts, auth


def _cache(ss: ServerState, ts: TypeState, name: str, version: str) -> None:
    raw = cluster_pb2.Cluster(name=name).SerializeToString()
    ts.resources[name].accept(name, raw, version, 0.0, ss)


@pytest.mark.parametrize(
    ("features", "delta"),
    [
        pytest.param(["xds_v3"], False, id="sotw-by-default"),
        pytest.param(["xds_v3", "delta_xds"], True, id="delta-feature"),
    ],
)
def test_the_feature_chooses_delta(features: list[str], delta: bool) -> None:
    assert _server(features).server.delta is delta


def test_first_request_subscribes_everything_with_cached_versions_of_this_server() -> None:
    ss, ts, _ = _setup("a", "b", "c")
    _cache(ss, ts, "a", "va")
    other = _server(["delta_xds"])
    other.type_state(CDS)
    ts.resources["c"].accept("c", b"\x0a\x01c", "vc", 0.0, other)  # from another server
    req = delta_request(ts, node=None, first=True, server=ss)
    assert list(req.resource_names_subscribe) == ["a", "b", "c"]
    assert list(req.resource_names_unsubscribe) == []
    assert dict(req.initial_resource_versions) == {"a": "va"}
    assert req.response_nonce == "" and not req.HasField("error_detail")


def test_later_requests_carry_only_the_changes_and_the_nonce() -> None:
    ss, ts, auth = _setup("a", "b")
    delta_request(ts, node=None, first=True, server=ss)
    del ts.resources["a"]
    ts.resources["d"] = ResourceState(CDS, "d", ss, auth)
    ts.nonce = "n7"
    req = delta_request(ts, node=None, first=False, server=ss)
    assert list(req.resource_names_subscribe) == ["d"]
    assert list(req.resource_names_unsubscribe) == ["a"]
    assert req.response_nonce == "n7" and not req.initial_resource_versions
    ack = delta_request(ts, node=None, first=False, server=ss)
    assert not ack.resource_names_subscribe and not ack.resource_names_unsubscribe


def test_nack_carries_the_error() -> None:
    ss, ts, _ = _setup("a")
    ts.nonce = "n1"
    req = delta_request(ts, node=None, first=False, server=ss, error="a: bad")
    assert req.error_detail.message == "a: bad" and req.response_nonce == "n1"


def _wrapped(name: str, version: str, msg: object | None) -> discovery_pb2.Resource:
    res = discovery_pb2.Resource(name=name, version=version)
    if msg is not None:
        res.resource.Pack(msg)
    return res


def test_decode_gives_versions_removals_and_problems() -> None:
    _, ts, _ = _setup("a", "b", "c", "d")
    resp = discovery_pb2.DeltaDiscoveryResponse(
        type_url=CLUSTER_URL,
        nonce="n1",
        resources=[
            _wrapped("a", "v1", cluster_pb2.Cluster(name="a", alt_stat_name="A")),
            _wrapped("b", "v2", cluster_pb2.Cluster(name="b", type=cluster_pb2.Cluster.STRICT_DNS)),
            _wrapped("c", "v3", None),  # TTL heartbeat: no body
            _wrapped("x", "v4", cluster_pb2.Cluster(name="d")),  # name differs
            _wrapped("e", "v5", listener_pb2.Listener(name="e")),  # wrong type
        ],
        removed_resources=["z"],
    )
    decoded = decode_delta_response(ts, resp)
    assert set(decoded.results) == {"a", "b"}
    assert decoded.versions == {"a": "v1", "b": "v2"}
    assert decoded.results["a"].value == "A"
    assert decoded.removed == ("z",)
    problems = "\n".join(decoded.errors)
    assert "b: type: STRICT_DNS is not supported" in problems
    assert "d: sent under the name 'x'" in problems
    assert "resources[4]: type 'type.googleapis.com/envoy.config.listener" in problems
    assert len(decoded.errors) == 3
