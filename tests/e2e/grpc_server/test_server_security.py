"""xDS-enabled servers (gRFC A36): STRICT, PERMISSIVE, DISABLE, not serving, rotation.

Real grpcio servers made by ``proxyless.grpc.server``, a real ADS server
serving inbound Listeners in istiod's shape (``conftest.py``), DevCA
certificates, and stock grpcio clients (``grpc.ssl_channel_credentials``
with a server certificate that also carries a DNS SAN, pinned by
``grpc.ssl_target_name_override``) or Python's ``ssl`` for the handshake
itself.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import grpc
import pytest
from tests.e2e.conftest import wait_until
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    METHOD,
    SERVER_ID,
    TRUST_DOMAIN,
    disable,
    permissive,
    publish,
    strict,
)

from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.controlplane.server import AdsServer

SERVER_DNS = "reviews.default.svc"


@pytest.fixture
def server_cert(ca: DevCA) -> IssuedCertificate:
    return ca.issue(SERVER_ID, dns=(SERVER_DNS,))


def _mtls(port: int, ca: DevCA, cert: IssuedCertificate | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.roots_pem,
        private_key=cert.key_pem if cert else None,
        certificate_chain=cert.chain_pem if cert else None,
    )
    return grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", SERVER_DNS)]
    )


def _call(channel: grpc.Channel, timeout: float = 5.0) -> str:
    with channel:
        reply: bytes = channel.unary_unary(METHOD)(b"", timeout=timeout)
    return reply.decode()


def _code(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, timeout=3.0)
    return info.value.code()  # type: ignore[attr-defined, no-any-return]


def _serving(server: object) -> bool:
    return bool(server.serving())  # type: ignore[attr-defined]


@pytest.fixture
def strict_port(
    ads: AdsServer, ca: DevCA, server_cert: IssuedCertificate, start_server: object
) -> Iterator[int]:
    server, port = start_server()  # type: ignore[operator]
    publish(ads, port, strict(ca, server_cert))
    wait_until(lambda: _serving(server), what="the server to serve")
    yield port


def test_strict_serves_mtls_and_names_the_caller(strict_port: int, ca: DevCA) -> None:
    client = ca.issue(CLIENT_ID)
    assert _call(_mtls(strict_port, ca, client)) == CLIENT_ID


def test_strict_refuses_plaintext(strict_port: int) -> None:
    assert _code(grpc.insecure_channel(f"127.0.0.1:{strict_port}")) == grpc.StatusCode.UNAVAILABLE


def test_strict_refuses_tls_without_client_certificate(strict_port: int, ca: DevCA) -> None:
    assert _code(_mtls(strict_port, ca, None)) == grpc.StatusCode.UNAVAILABLE


def test_strict_refuses_a_certificate_from_another_trust_domain(
    strict_port: int, ca: DevCA
) -> None:
    other = DevCA("other.example")
    impostor = other.issue(f"spiffe://other.example/ns/default/sa/{TRUST_DOMAIN}")
    # The client trusts our CA (so it would accept the server) but presents
    # a certificate our server's trust bundle does not verify.
    assert _code(_mtls(strict_port, ca, impostor)) == grpc.StatusCode.UNAVAILABLE


def test_strict_handshake_seen_from_python_ssl(
    strict_port: int, ca: DevCA, server_cert: IssuedCertificate
) -> None:
    """The server presents its own SVID; the handshake is grpcio's, not a proxy's."""
    ctx = ssl.create_default_context(cadata=ca.roots_pem.decode())
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", strict_port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    presented = ssl.DER_cert_to_PEM_cert(der).encode()
    assert presented.replace(b"\n", b"") in server_cert.chain_pem.replace(b"\n", b"")


def test_permissive_accepts_both_and_peer_identity_tells_them_apart(
    ads: AdsServer, ca: DevCA, server_cert: IssuedCertificate, start_server: object
) -> None:
    server, port = start_server()  # type: ignore[operator]
    publish(ads, port, permissive(ca, server_cert))
    wait_until(lambda: _serving(server), what="the server to serve")
    assert _call(_mtls(port, ca, ca.issue(CLIENT_ID))) == CLIENT_ID
    assert _call(grpc.insecure_channel(f"127.0.0.1:{port}")) == "plaintext"


def test_disable_serves_plaintext_only(ads: AdsServer, ca: DevCA, start_server: object) -> None:
    server, port = start_server()  # type: ignore[operator]
    publish(ads, port, disable())
    wait_until(lambda: _serving(server), what="the server to serve")
    assert _call(grpc.insecure_channel(f"127.0.0.1:{port}")) == "plaintext"
    assert _code(_mtls(port, ca, ca.issue(CLIENT_ID))) == grpc.StatusCode.UNAVAILABLE


def test_not_serving_until_the_listener_arrives_and_after_it_goes(
    ads: AdsServer, ca: DevCA, start_server: object
) -> None:
    seen: list[tuple[str, bool]] = []
    server, port = start_server(
        serving_status_callback=lambda address, serving, error: seen.append((address, serving))
    )
    assert _code(grpc.insecure_channel(f"127.0.0.1:{port}")) == grpc.StatusCode.UNAVAILABLE
    publish(ads, port, disable())
    wait_until(lambda: _serving(server), what="the server to serve")
    assert _call(grpc.insecure_channel(f"127.0.0.1:{port}")) == "plaintext"
    publish(ads, port, None)
    wait_until(lambda: not _serving(server), what="the server to stop serving")
    assert _code(grpc.insecure_channel(f"127.0.0.1:{port}")) == grpc.StatusCode.UNAVAILABLE
    assert ("127.0.0.1:0", True) in seen and seen[-1] == ("127.0.0.1:0", False)


def test_rotation_new_handshakes_present_the_new_certificate(
    ads: AdsServer, ca: DevCA, server_cert: IssuedCertificate, start_server: object
) -> None:
    server, port = start_server()  # type: ignore[operator]
    publish(ads, port, strict(ca, server_cert))
    wait_until(lambda: _serving(server), what="the server to serve")
    client = ca.issue(CLIENT_ID)
    old = _mtls(port, ca, client)
    assert _call_keep(old) == CLIENT_ID
    renewed = ca.issue(SERVER_ID, dns=(SERVER_DNS,))
    publish(ads, port, strict(ca, renewed))

    def presents_new() -> bool:
        return _presented(port, ca, client) == _leaf(renewed)

    wait_until(presents_new, what="new handshakes to present the renewed certificate")
    assert _call(_mtls(port, ca, client)) == CLIENT_ID
    # The connection made before the rotation still works.
    assert _call_keep(old) == CLIENT_ID
    old.close()


def _call_keep(channel: grpc.Channel) -> str:
    reply: bytes = channel.unary_unary(METHOD)(b"", timeout=5)
    return reply.decode()


def _leaf(cert: IssuedCertificate) -> bytes:
    pem = cert.chain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _presented(port: int, ca: DevCA, client: IssuedCertificate) -> bytes | None:
    import os
    import tempfile

    ctx = ssl.create_default_context(cadata=ca.roots_pem.decode())
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory() as d:
        chain, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        with open(chain, "wb") as f:
            f.write(client.chain_pem)
        with open(key, "wb") as f:
            f.write(client.key_pem)
        ctx.load_cert_chain(chain, key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_tls_without_client_certificates_serves_anonymous_callers(
    ads: AdsServer, ca: DevCA, server_cert: IssuedCertificate, start_server: object
) -> None:
    from tests.e2e.grpc_server.conftest import downstream_tls, inbound_chain

    server, port = start_server()  # type: ignore[operator]
    tls = downstream_tls(ca, server_cert, require=False)
    tls.common_tls_context.ClearField("validation_context")
    publish(ads, port, [inbound_chain("tls", tls)])
    wait_until(lambda: _serving(server), what="the server to serve")
    # TLS without a client certificate: no identity to read.
    assert _call(_mtls(port, ca, None)) == "plaintext"
    assert _code(grpc.insecure_channel(f"127.0.0.1:{port}")) == grpc.StatusCode.UNAVAILABLE
