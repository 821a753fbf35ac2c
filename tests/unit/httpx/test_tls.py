"""The httpx transports' TLS pieces without the network: per-version
endpoint pools and their draining on rotation, handshake failures turned
into errors naming the cluster and the identities, ALPN by protocol, the
SecurityError found behind an httpx connect error."""

from __future__ import annotations

import ssl
from typing import Any

import httpcore
import httpx
import pytest

from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError, IdentityMismatch, SecurityError
from proxyless.httpx._errors import security_cause
from proxyless.httpx._pool import EndpointPools
from proxyless.httpx._tls import TlsRefused, alpn_for, handshake_failure
from proxyless.resources.model.matchers import StringMatcher
from proxyless.resources.model.security import SanMatcher
from proxyless.security import load_trust
from proxyless.security.credentials import ClientTls

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
ADDRESS = "127.0.0.1:9443"


class FakeTransport:
    def __init__(self, label: str) -> None:
        self.label = label
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def trust() -> Any:
    return load_trust(DevCA().roots_pem, source="test roots")


def _tls(trust: Any, version: int, cluster: str = "c") -> ClientTls:
    matcher = SanMatcher("URI", StringMatcher("exact", REVIEWS))
    return ClientTls(cluster, None, trust, "", (matcher,), (), version)


def _pools() -> EndpointPools:
    return EndpointPools(
        lambda http2: FakeTransport("plain"),
        is_async=False,
        tls_factory=lambda tls, http2: FakeTransport(f"{tls.cluster} v{tls.version}"),
    )


def test_a_tls_cluster_gets_its_own_pool_per_version(trust: Any) -> None:
    pools = _pools()
    pools.retain([ADDRESS])
    tls1 = _tls(trust, 1)
    v1 = pools.acquire_tls(ADDRESS, tls1, False)
    again = pools.acquire_tls(ADDRESS, tls1, False)
    plain = pools.acquire(ADDRESS, "http", None, False)
    assert again is v1 and v1.transport.label == "c v1"
    assert plain is not v1 and plain.transport.label == "plain"


@pytest.mark.parametrize(
    ("in_flight_v1", "closed_at_rotation"),
    [
        pytest.param(0, True, id="idle-old-pool-closes-at-once"),
        pytest.param(1, False, id="busy-old-pool-drains-first"),
    ],
)
def test_rotation_drains_the_old_pool(
    trust: Any, in_flight_v1: int, closed_at_rotation: bool
) -> None:
    pools = _pools()
    pools.retain([ADDRESS])
    tls1, tls2 = _tls(trust, 1), _tls(trust, 2)
    old = pools.acquire_tls(ADDRESS, tls1, False)
    transport = old.transport
    if not in_flight_v1:
        pools.release_entry(old)
    new = pools.acquire_tls(ADDRESS, tls2, False)
    assert new is not old and new.transport.label == "c v2"
    assert old.closing and transport.closed is closed_at_rotation
    if in_flight_v1:
        pools.release_entry(old)  # the in-flight request ends: now it closes
        assert transport.closed
    # A request that read v1 just before the rotation uses the v2 pool.
    assert pools.acquire_tls(ADDRESS, tls1, False) is new


def test_rotation_of_one_cluster_leaves_another_alone(trust: Any) -> None:
    pools = _pools()
    pools.retain([ADDRESS])
    other = pools.acquire_tls(ADDRESS, _tls(trust, 1, cluster="d"), False)
    pools.release_entry(other)
    pools.acquire_tls(ADDRESS, _tls(trust, 2), False)
    assert not other.closing and not other.transport.closed


def test_a_drained_entry_is_never_reused(trust: Any) -> None:
    pools = _pools()
    pools.retain([ADDRESS])
    tls1 = _tls(trust, 1)
    entry = pools.acquire_tls(ADDRESS, tls1, False)
    entry.closing = True  # drained between a lookup and its use
    fresh = pools.acquire_tls(ADDRESS, tls1, False)
    assert fresh is not entry and not fresh.closing


@pytest.mark.parametrize(
    ("http2", "alpn"),
    [pytest.param(False, ("http/1.1",), id="http1"), pytest.param(True, ("h2",), id="h2")],
)
def test_alpn_follows_the_cluster_protocol(http2: bool, alpn: tuple[str, ...]) -> None:
    assert alpn_for(http2) == alpn


def _verify_error() -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "self-signed certificate in certificate chain"
    return err


def _wrapped(cause: BaseException) -> httpcore.ConnectError:
    try:
        raise httpcore.ConnectError(str(cause)) from cause
    except httpcore.ConnectError as exc:
        return exc


@pytest.mark.parametrize(
    ("cause", "kind", "text"),
    [
        pytest.param(
            _verify_error(),
            CertificateError,
            "does not verify against the cluster's trust bundle "
            "(self-signed certificate in certificate chain)",
            id="another-ca",
        ),
        pytest.param(
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            SecurityError,
            "TLS handshake failed",
            id="plaintext-server",
        ),
        pytest.param(
            ConnectionResetError(104, "Connection reset by peer"),
            SecurityError,
            "TLS handshake failed",
            id="reset-during-handshake",
        ),
    ],
)
def test_handshake_failures_name_cluster_endpoint_and_expected_identity(
    trust: Any, cause: BaseException, kind: type[Exception], text: str
) -> None:
    err = handshake_failure(_tls(trust, 1), ADDRESS, _wrapped(cause))
    assert type(err) is kind
    message = str(err)
    assert message.startswith(f"cluster 'c' endpoint {ADDRESS}: ")
    assert text in message and REVIEWS in message


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(IdentityMismatch("presented x, expected y"), id="identity"),
        pytest.param(CertificateError("chain"), id="chain"),
    ],
)
def test_the_refusal_is_found_behind_httpx_connect_error(error: SecurityError) -> None:
    refused = TlsRefused(error)
    try:
        try:
            raise refused from None  # as httpcore's pool re-raises it
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from exc  # as httpx maps it
    except httpx.ConnectError as mapped:
        assert security_cause(mapped) is error


def test_an_ordinary_connect_error_has_no_security_cause() -> None:
    try:
        try:
            raise httpcore.ConnectError("refused")
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as mapped:
        assert security_cause(mapped) is None
