"""Why proxyless makes gRPC TLS connections itself: grpcio's own
``ssl_channel_credentials`` cannot verify a SPIFFE workload certificate
(URI SAN only), and a SPIFFE ID as ``grpc.ssl_target_name_override`` does
not help; it connects only when the issuer adds a DNS SAN and the client
names it (the measured floor of ``bench/grpc_mtls.py``, design candidate (c))."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from tests.e2e.grpc_tls.conftest import CLIENT, METHOD, REVIEWS, TlsServer, reply

from proxyless.controlplane.ca import DevCA

DNS_NAME = "reviews.default.svc"


def _native_call(ca: DevCA, server: TlsServer, override: str | None) -> bytes:
    client = ca.issue(CLIENT)
    creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
    options = [("grpc.ssl_target_name_override", override)] if override else []
    with grpc.secure_channel(server.address, creds, options=options) as ch:
        out: bytes = ch.unary_unary(METHOD)(b"x", timeout=3.0)
        return out


@pytest.mark.parametrize(
    "override",
    [
        pytest.param(None, id="address"),
        pytest.param(REVIEWS, id="spiffe-id-override"),
        pytest.param("reviews", id="host-override"),
    ],
)
def test_grpcio_tls_cannot_verify_a_uri_only_svid(
    ca: DevCA, servers: Callable[..., TlsServer], override: str | None
) -> None:
    server = servers("reviews", ca.issue(REVIEWS), ca.roots_pem)
    with pytest.raises(grpc.RpcError) as info:
        _native_call(ca, server, override)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert server.calls == 0


def test_grpcio_tls_verifies_a_dns_san_the_client_names(
    ca: DevCA, servers: Callable[..., TlsServer]
) -> None:
    server = servers("reviews", ca.issue(REVIEWS, dns=(DNS_NAME,)), ca.roots_pem)
    assert reply(_native_call(ca, server, DNS_NAME))["peer"] == [CLIENT]
    # It checks that one name only: any certificate of the CA with that DNS SAN
    # passes, whatever its SPIFFE ID; it cannot express the cluster's URI matchers.
    impostor = servers(
        "ratings", ca.issue(REVIEWS.replace("reviews", "ratings"), dns=(DNS_NAME,)), ca.roots_pem
    )
    assert reply(_native_call(ca, impostor, DNS_NAME))["server"] == "ratings"
