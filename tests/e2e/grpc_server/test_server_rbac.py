"""RBAC (gRFC A41) end to end: istiod-shaped DENY and ALLOW filters on a
PERMISSIVE server, called over mTLS with different SPIFFE IDs and over
plaintext; each case names the expected status and, when denied, the policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from tests.e2e.conftest import wait_until
from tests.e2e.grpc_server.conftest import CLIENT_ID, METHOD, permissive, principal_policy, publish

from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer

SERVER_DNS = "reviews.default.svc"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"
DEBUG_HEADER = rbac_pb2.Policy(
    permissions=[
        rbac_pb2.Permission(
            header=route_components_pb2.HeaderMatcher(name="x-debug", present_match=True)
        )
    ],
    principals=[rbac_pb2.Principal(any=True)],
)
POLICIES: dict[str, Any] = {
    "deny": {
        "default-no-debug-0": DEBUG_HEADER,
        "default-no-ratings-0": principal_policy(RATINGS, path=METHOD),
    },
    "allow": {"default-callers-0": principal_policy(CLIENT_ID, RATINGS)},
}


@pytest.mark.parametrize(
    ("caller", "metadata", "code", "detail"),
    [
        pytest.param(CLIENT_ID, (), grpc.StatusCode.OK, "", id="allowed-principal"),
        pytest.param(
            RATINGS, (), grpc.StatusCode.PERMISSION_DENIED, "default-no-ratings-0", id="deny-wins"
        ),
        pytest.param(
            CLIENT_ID,
            (("x-debug", "1"),),
            grpc.StatusCode.PERMISSION_DENIED,
            "default-no-debug-0",
            id="deny-header",
        ),
        pytest.param(
            "spiffe://cluster.local/ns/other/sa/x",
            (),
            grpc.StatusCode.PERMISSION_DENIED,
            "no ALLOW policy matched",
            id="default-deny",
        ),
        pytest.param(
            None, (), grpc.StatusCode.PERMISSION_DENIED, "no ALLOW policy matched", id="plaintext"
        ),
    ],
)
def test_rbac_decisions(
    ads: AdsServer,
    ca: DevCA,
    start_server: Callable[..., tuple[Any, int]],
    caller: str | None,
    metadata: tuple[tuple[str, str], ...],
    code: grpc.StatusCode,
    detail: str,
) -> None:
    server, port = start_server()
    cert = ca.issue("spiffe://cluster.local/ns/default/sa/reviews", dns=(SERVER_DNS,))
    publish(ads, port, permissive(ca, cert, **POLICIES))
    wait_until(server.serving, what="the server to serve")
    if caller is None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        client = ca.issue(caller)
        creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", SERVER_DNS)]
        )
    with channel:
        try:
            reply = channel.unary_unary(METHOD)(b"", metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == code  # type: ignore[attr-defined]
            assert detail in exc.details()  # type: ignore[attr-defined]
            return
    assert code == grpc.StatusCode.OK
    assert reply.decode() == caller
