"""Per-call checks of a resolved inbound Listener (gRFC A36 routes, A41 RBAC
with per-route overrides), as a function of the Listener and the call."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from tests.e2e.grpc_server.conftest import disable, inbound_listener, principal_policy

from proxyless.grpc._chain_match import Connection
from proxyless.grpc._relay import plain_ip
from proxyless.grpc._serving import build_state, same_host
from proxyless.resources.model.server_listener import ServerListener
from proxyless.resources.parse.listener import parse_listener
from proxyless.security.credentials import SecretSources

OPEN = "/svc.S/Open"
SECRET = "/svc.S/Secret"
OTHER = "/other.S/Any"


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _listener() -> ServerListener:
    """DENY everything, except on the route of OPEN, whose RBACPerRoute has no
    rules; OTHER has a route that forwards (invalid on a server)."""
    (chain,) = disable(deny={"deny-all": principal_policy()})
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    open_route = rc.Route(
        match=rc.RouteMatch(path=OPEN),
        non_forwarding_action=rc.NonForwardingAction(),
        typed_per_filter_config={"envoy.filters.http.rbac.DENY": _pack(rbac_pb2.RBACPerRoute())},
    )
    forwarding = rc.Route(match=rc.RouteMatch(prefix="/other."), route=rc.RouteAction(cluster="c"))
    vhost = hcm.route_config.virtual_hosts[0]
    routes = [open_route, forwarding, *vhost.routes]
    del vhost.routes[:]
    vhost.routes.extend(routes)
    hcm.route_config.CopyFrom(route_pb2.RouteConfiguration(name="inbound", virtual_hosts=[vhost]))
    chain.filters[0].typed_config.CopyFrom(_pack(hcm))
    parsed = parse_listener(inbound_listener("l", "127.0.0.1", 80, [chain]))
    assert isinstance(parsed, ServerListener)
    return parsed


CONN = Connection("127.0.0.1", 80, "127.0.0.1", 5000, "raw_buffer")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(OPEN, None, id="per-route-override-lifts-deny"),
        pytest.param(SECRET, ("PERMISSION_DENIED", "deny-all"), id="listener-level-deny"),
        pytest.param(OTHER, ("UNAVAILABLE", "non_forwarding_action"), id="forwarding-route"),
    ],
)
def test_check(path: str, expected: tuple[str, str] | None) -> None:
    listener = _listener()
    state = build_state(listener, SecretSources(), None)
    verdict = state.check(CONN, listener.filter_chains[0], path, {}, lambda: None)
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None and verdict[0] == expected[0] and expected[1] in verdict[1]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param("[::]", "::", True, id="brackets"),
        pytest.param("", "0.0.0.0", True, id="empty-is-any-v4"),
        pytest.param("0.0.0.0", "[::]", False, id="v4-any-is-not-v6-any"),
        pytest.param("127.0.0.1", "127.0.0.2", False, id="different"),
        pytest.param("[::1]", "0:0::1", True, id="v6-forms"),
        pytest.param("Localhost", "localhost", True, id="names"),
    ],
)
def test_same_host(a: str, b: str, same: bool) -> None:
    assert same_host(a, b) is same


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        pytest.param("::ffff:10.1.2.3", "10.1.2.3", id="v4-mapped"),
        pytest.param("::ffff:127.0.0.1", "127.0.0.1", id="v4-mapped-loopback"),
        pytest.param("fe80::1%eth0", "fe80::1", id="zone"),
        pytest.param("2001:DB8::1", "2001:db8::1", id="v6"),
        pytest.param("10.0.0.1", "10.0.0.1", id="v4"),
    ],
)
def test_addresses_are_matched_in_plain_form(raw: str, plain: str) -> None:
    assert plain_ip(raw) == plain
