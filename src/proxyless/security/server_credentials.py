"""The TLS credentials of a server filter chain, from its ``DownstreamTlsContext``.

The server-side counterpart of
:class:`~proxyless.security.credentials.ClusterCredentials` (gRFC A29 for
the certificate references, A36 for where the context comes from): it
resolves the server's certificate and, when clients are verified, the trust
bundle through the same :class:`~proxyless.security.credentials.SecretSources`
handlers (inline and file data sources, certificate-provider instances,
SDS), and publishes one immutable :class:`ServerTls` at a time. Rotation
publishes a new one with a higher ``version``; a TLS server hands the newest
one to each new handshake, and established connections keep theirs.

**Fail closed.** Until the material is complete :meth:`ServerCredentials.current`
raises :class:`~proxyless.errors.CredentialsNotReady` (or the
:class:`~proxyless.errors.CertificateError` that stands in for a bad
certificate); a server does not accept TLS connections on that chain until then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxyless.resources.model.security import CertificateValidationContext, UpstreamTlsContext
from proxyless.resources.model.server_listener import DownstreamTlsContext
from proxyless.security.credentials import ClientTls, ClusterCredentials, SecretSources
from proxyless.security.material import Identity, TrustBundle

__all__ = ["ServerCredentials", "ServerTls"]


@dataclass(frozen=True, slots=True, eq=False)
class ServerTls:
    """What a TLS handshake of one server filter chain needs, at one ``version``.

    ``trust`` is None when client certificates are not verified.
    """

    label: str
    identity: Identity
    trust: TrustBundle | None
    require_client_certificate: bool
    version: int

    def __repr__(self) -> str:
        mode = "mTLS" if self.require_client_certificate else "TLS"
        return f"ServerTls({self.label!r} v{self.version}, {mode}, {self.identity.spiffe_id})"


class ServerCredentials:
    """The credentials of one server filter chain (see the module docstring)."""

    def __init__(self, label: str, context: DownstreamTlsContext, sources: SecretSources) -> None:
        self.label = label
        self.context = context
        if not context.verifies_clients:
            sources = _NoClientTrust(sources)
        self._inner = ClusterCredentials(label, _as_upstream(context), sources)

    def current(self) -> ServerTls:
        """The material to handshake with now; raises what stands in for it."""
        return self._convert(self._inner.current())

    def wait(self, timeout: float | None) -> ServerTls:
        """:meth:`current`, waiting up to ``timeout`` for material on its way."""
        return self._convert(self._inner.wait(timeout))

    def _convert(self, tls: ClientTls) -> ServerTls:
        assert tls.identity is not None  # a DownstreamTlsContext always names one
        verifies = self.context.verifies_clients
        return ServerTls(
            label=self.label,
            identity=tls.identity,
            trust=tls.trust if verifies else None,
            require_client_certificate=self.context.require_client_certificate,
            version=tls.version,
        )

    def on_change(self, fn: Callable[[ServerTls], None]) -> Callable[[], None]:
        """Call ``fn`` with every new :class:`ServerTls`."""
        return self._inner.on_change(lambda tls: fn(self._convert(tls)))

    def close(self) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return f"ServerCredentials({self.label!r}: {self._inner!r})"


class _NoClientTrust(SecretSources):
    """``sources``' handlers, with an empty bundle standing in for the system
    roots: what a context that verifies no client gets as its trust (never
    used, and the system's roots are not read for it)."""

    def __init__(self, sources: SecretSources) -> None:
        super().__init__(sources.now)
        self.provider_identity = sources.provider_identity
        self.sds_identity = sources.sds_identity
        self.provider_trust = sources.provider_trust
        self.sds_trust = sources.sds_trust

    def system_roots(self) -> TrustBundle:
        return _NO_TRUST


_NO_TRUST = TrustBundle(roots_pem=b"", source="no client verification")


def _as_upstream(context: DownstreamTlsContext) -> UpstreamTlsContext:
    """The common part of ``context`` in the shape :class:`ClusterCredentials`
    resolves (an empty bundle stands in for the trust when no client is
    verified)."""
    validation = context.validation
    if not context.verifies_clients:
        validation = CertificateValidationContext(system_root_certs=True)
    return UpstreamTlsContext(
        identity=context.identity,
        validation=validation,
        validation_sds_secret=context.validation_sds_secret,
    )
