"""The TLS credentials of a cluster's connections, resolved from its
``UpstreamTlsContext`` and kept current as certificates rotate.

A cluster whose ``transport_socket`` is TLS gets a :class:`ClusterCredentials`
(on its :class:`~proxyless.runtime.cluster.ClusterRuntime` as ``tls``). It
resolves the context's references into material — the client identity from a
``TlsCertificate`` data source, an SDS secret or a certificate-provider
instance; the trust bundle from ``trusted_ca``, a CA provider instance, a
validation SDS secret or the system roots — and publishes one immutable
:class:`ClientTls` at a time. Rotation publishes a new one (with a higher
``version``); connections made with the old one are left alone.

**Fail closed.** Until every reference has material, :meth:`ClusterCredentials.current`
raises :class:`~proxyless.errors.CredentialsNotReady` naming the cluster and
what it waits for; a bad certificate raises
:class:`~proxyless.errors.CertificateError` naming the file, secret or
instance. The data paths never connect in plaintext instead: a call waits
(:meth:`ClusterCredentials.wait`, bounded by its deadline) or fails with
that error.

Where material comes from is pluggable (:class:`SecretSources`): inline and
file data sources are read here; certificate-provider instances (gRFC
A29/A65 ``file_watcher``) and SDS secrets (Envoy SDS, on the ADS stream or
from a separate SDS server) are watched by handlers the Mesh registers. A
reference nothing can serve reports what is missing instead of hanging.

While open, a :class:`ClusterCredentials` reports the seconds left on its
leaf certificate in the ``proxyless.certificate.expiry`` gauge
(:mod:`proxyless.observability.signals`).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from proxyless.errors import CertificateError, CredentialsNotReady, SecurityError
from proxyless.observability import signals
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    CertificateValidationContext,
    DataSource,
    SanMatcher,
    SdsSecretConfig,
    TlsCertificate,
    TlsIdentity,
    UpstreamTlsContext,
)
from proxyless.security.contexts import client_context
from proxyless.security.material import Identity, TrustBundle, load_identity, load_trust
from proxyless.security.peer import PeerCertificate, check_sans, peer_certificate

__all__ = [
    "ClientTls",
    "ClusterCredentials",
    "IdentityHandler",
    "Material",
    "SecretSources",
    "TrustHandler",
    "read_data_source",
]

#: What a source delivers: material, or the error that stands in for it.
Material: TypeAlias = Identity | TrustBundle | SecurityError
Unsubscribe = Callable[[], None]


@dataclass(frozen=True, slots=True, eq=False)
class ClientTls:
    """Everything a TLS connection of ``cluster`` needs, at one ``version``."""

    cluster: str
    identity: Identity | None
    trust: TrustBundle
    sni: str
    matchers: tuple[SanMatcher, ...]
    alpn: tuple[str, ...]
    version: int
    _contexts: dict[tuple[str, ...], ssl.SSLContext] = field(default_factory=dict, repr=False)

    def context(self, alpn: tuple[str, ...] | None = None) -> ssl.SSLContext:
        """The client ``ssl.SSLContext`` (made once per ALPN list)."""
        protocols = self.alpn if alpn is None else alpn
        ctx = self._contexts.get(protocols)
        if ctx is None:
            ctx = self._contexts[protocols] = client_context(self.identity, self.trust, protocols)
        return ctx

    def verify(self, peer_der: bytes | None, endpoint: str) -> PeerCertificate:
        """Check the server's leaf certificate against the SAN matchers;
        raises :class:`~proxyless.errors.IdentityMismatch` naming the
        cluster, the endpoint, the expected and the presented identity."""
        where = f"cluster {self.cluster!r} endpoint {endpoint}"
        if not peer_der:
            raise CertificateError(f"{where}: the server presented no certificate")
        peer = peer_certificate(peer_der)
        check_sans(peer, self.matchers, where)
        return peer

    def __repr__(self) -> str:
        who = self.identity.spiffe_id if self.identity else "no client certificate"
        return f"ClientTls({self.cluster!r} v{self.version}, {who})"


def read_data_source(source: DataSource, what: str) -> tuple[bytes, str]:
    """The bytes of an Envoy ``DataSource`` and a name for messages."""
    if source.inline is not None:
        return source.inline, f"inline {what}"
    assert source.filename is not None
    try:
        with open(source.filename, "rb") as f:
            return f.read(), source.filename
    except OSError as exc:
        raise CertificateError(
            f"{source.filename}: cannot read the {what} ({exc.strerror})"
        ) from None


class IdentityHandler(Protocol):
    """Watches identities of one kind of reference (SDS, provider instances)."""

    def __call__(self, ref: TlsIdentity, deliver: Callable[[Material], None]) -> Unsubscribe: ...


class TrustHandler(Protocol):
    """Watches trust bundles: an SDS validation secret name, or a CA
    provider instance; delivers a :class:`TrustBundle` (whose matchers, for
    an SDS validation context, come along in ``extra_matchers``)."""

    def __call__(
        self,
        ref: SdsSecretConfig | CertificateProviderInstance,
        deliver: Callable[[Material], None],
    ) -> Unsubscribe: ...


class SecretSources:
    """The handlers the Mesh registers for references it can watch."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.now = clock
        #: identities by certificate-provider instance or SDS secret
        self.provider_identity: IdentityHandler | None = None
        self.sds_identity: IdentityHandler | None = None
        #: trust bundles by CA provider instance or SDS validation secret
        self.provider_trust: TrustHandler | None = None
        self.sds_trust: TrustHandler | None = None
        #: the system's default roots (PEM), read once when first needed
        self._system_roots: TrustBundle | None = None

    def system_roots(self) -> TrustBundle:
        if self._system_roots is None:
            ctx = ssl.create_default_context()
            ders = ctx.get_ca_certs(binary_form=True)
            pem = "".join(ssl.DER_cert_to_PEM_cert(d) for d in ders).encode()
            self._system_roots = load_trust(pem, source="the system's root certificates")
        return self._system_roots


def _identity_label(ref: TlsIdentity) -> str:
    if isinstance(ref, SdsSecretConfig):
        return f"SDS secret {ref.name!r}"
    if isinstance(ref, CertificateProviderInstance):
        name = f" certificate {ref.certificate_name!r}" if ref.certificate_name else ""
        return f"certificate-provider instance {ref.instance_name!r}{name}"
    return "the TLS certificate"


def _identity_source(ref: TlsIdentity | None) -> str:
    if isinstance(ref, SdsSecretConfig):
        return f"sds:{ref.name}"
    if isinstance(ref, CertificateProviderInstance):
        return f"certificate_provider:{ref.instance_name}"
    if isinstance(ref, TlsCertificate) and ref.certificate_chain.filename is not None:
        return f"file:{ref.certificate_chain.filename}"
    return "inline"


class ClusterCredentials:
    """The credentials of one cluster (see the module docstring)."""

    def __init__(self, cluster: str, context: UpstreamTlsContext, sources: SecretSources) -> None:
        self.cluster = cluster
        self._sources = sources
        self._cond = threading.Condition()
        self._context = context
        self._identity: Material | _NoClientCertificate | None = None
        self._trust: Material | None = None
        self._current: ClientTls | None = None
        self._error: SecurityError | None = None
        self._version = 0
        self._subs: list[Unsubscribe] = []
        self._listeners: list[Callable[[ClientTls], None]] = []
        self._generation = 0
        self._subscribe(context)
        signals.track_credentials(self)  # the certificate-expiry gauge

    # -- resolving references ---------------------------------------------------------
    def _subscribe(self, context: UpstreamTlsContext) -> None:
        self._generation += 1
        generation = self._generation
        self._identity = None if context.identity is not None else _NO_IDENTITY
        self._trust = None

        def on_identity(m: Material) -> None:
            self._deliver(generation, identity=m)

        def on_trust(m: Material) -> None:
            self._deliver(generation, trust=m)

        if context.identity is not None:
            self._subs.append(self._watch_identity(context.identity, on_identity))
        self._subs.append(self._watch_trust(context, on_trust))

    def _watch_identity(self, ref: TlsIdentity, deliver: Callable[[Material], None]) -> Unsubscribe:
        if isinstance(ref, TlsCertificate):
            try:
                chain, where = read_data_source(ref.certificate_chain, "certificate chain")
                key, _ = read_data_source(ref.private_key, "private key")
                deliver(load_identity(chain, key, source=where, now=self._sources.now()))
            except SecurityError as exc:
                deliver(exc)
            return _nothing
        handler = (
            self._sources.sds_identity
            if isinstance(ref, SdsSecretConfig)
            else self._sources.provider_identity
        )
        if handler is None:
            deliver(
                CredentialsNotReady(
                    f"cluster {self.cluster!r}: {_identity_label(ref)} cannot be served "
                    "(no source for it is configured)"
                )
            )
            return _nothing
        return handler(ref, deliver)

    def _watch_trust(
        self, context: UpstreamTlsContext, deliver: Callable[[Material], None]
    ) -> Unsubscribe:
        validation = context.validation
        sds = context.validation_sds
        if sds is not None:
            handler = self._sources.sds_trust
            ref: SdsSecretConfig | CertificateProviderInstance = sds
        elif validation is not None and validation.ca_certificate_provider is not None:
            handler = self._sources.provider_trust
            ref = validation.ca_certificate_provider
        else:
            try:
                deliver(self._static_trust(validation))
            except SecurityError as exc:
                deliver(exc)
            return _nothing
        if handler is None:
            label = (
                f"SDS validation secret {ref.name!r}"
                if isinstance(ref, SdsSecretConfig)
                else f"CA certificate-provider instance {ref.instance_name!r}"
            )
            deliver(
                CredentialsNotReady(
                    f"cluster {self.cluster!r}: {label} cannot be served "
                    "(no source for it is configured)"
                )
            )
            return _nothing
        return handler(ref, deliver)

    def _static_trust(self, validation: CertificateValidationContext | None) -> TrustBundle:
        if validation is not None and validation.trusted_ca is not None:
            pem, where = read_data_source(validation.trusted_ca, "trusted CA")
            return load_trust(pem, source=where)
        if validation is not None and validation.system_root_certs:
            return self._sources.system_roots()
        raise CertificateError(
            f"cluster {self.cluster!r}: the TLS context names no trust (no trusted_ca, "
            "CA provider instance or validation SDS secret); refusing to connect without "
            "verifying the server"
        )

    def _deliver(
        self,
        generation: int,
        *,
        identity: Material | None = None,
        trust: Material | None = None,
    ) -> None:
        with self._cond:
            if generation != self._generation:
                return  # from a context replaced since
            if identity is not None:
                self._identity = identity
            if trust is not None:
                self._trust = trust
            published = self._publish()
            self._cond.notify_all()
            listeners = list(self._listeners) if published is not None else []
        for fn in listeners:
            assert published is not None
            fn(published)

    def _publish(self) -> ClientTls | None:
        ident, trust = self._identity, self._trust
        for part in (ident, trust):
            if isinstance(part, SecurityError):
                # Keep serving the last good material through a bad rotation.
                self._error = part
                return None
        if ident is None or trust is None:
            return None
        assert isinstance(trust, TrustBundle)
        self._error = None
        self._version += 1
        context = self._context
        matchers = context.validation.match_subject_alt_names if context.validation else ()
        self._current = ClientTls(
            cluster=self.cluster,
            identity=ident if isinstance(ident, Identity) else None,
            trust=trust,
            sni=context.sni,
            matchers=matchers,
            alpn=context.alpn_protocols,
            version=self._version,
        )
        return self._current

    # -- what connections read -----------------------------------------------------------
    def current(self) -> ClientTls:
        """The credentials to connect with now; raises the error that stands
        in for them (see the module docstring)."""
        current = self._current
        if current is not None:
            return current
        with self._cond:
            if self._current is not None:
                return self._current
            raise self._not_ready()

    def _not_ready(self) -> SecurityError:
        if self._error is not None:
            return self._error
        missing = []
        if self._identity is None and self._context.identity is not None:
            missing.append(_identity_label(self._context.identity))
        if self._trust is None:
            missing.append("the trust bundle")
        what = " and ".join(missing) or "its certificates"
        return CredentialsNotReady(f"cluster {self.cluster!r}: waiting for {what}")

    @property
    def failure(self) -> SecurityError | None:
        """The error standing in for material that failed (waiting will not
        cure it until a source delivers again), or None."""
        return self._error

    def wait(self, timeout: float | None) -> ClientTls:
        """:meth:`current`, waiting up to ``timeout`` seconds for material
        still on its way (not for one that failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._current is None and self._error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._current is not None:
                return self._current
            raise self._not_ready()

    def on_change(self, fn: Callable[[ClientTls], None]) -> Unsubscribe:
        """Call ``fn`` with every new :class:`ClientTls` (on the thread that
        delivered the material)."""
        with self._cond:
            self._listeners.append(fn)

        def remove() -> None:
            with self._cond:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return remove

    def update(self, context: UpstreamTlsContext) -> None:
        """The cluster's TLS context changed (CDS): resolve the new one; the
        current material serves until the new one is complete."""
        if context == self._context:
            return
        subs, self._subs = self._subs, []
        for unsubscribe in subs:
            unsubscribe()
        with self._cond:
            self._context = context
        self._subscribe(context)

    def close(self) -> None:
        signals.untrack_credentials(self)
        subs, self._subs = self._subs, []
        for unsubscribe in subs:
            unsubscribe()
        with self._cond:
            self._generation += 1
            self._listeners.clear()

    def certificate_expiry(self) -> tuple[str, str, float] | None:
        """``(source, SPIFFE ID or "", seconds until the leaf expires)`` of the
        client identity in use, on the sources' clock; None without one. The
        source is ``sds:<secret>``, ``certificate_provider:<instance>``,
        ``file:<path>`` or ``inline``."""
        current = self._current
        identity = current.identity if current is not None else None
        if identity is None:
            return None
        source = _identity_source(self._context.identity)
        return source, identity.spiffe_id or "", identity.expires_in(self._sources.now())

    def __repr__(self) -> str:
        state = repr(self._current) if self._current else f"not ready ({self._not_ready()})"
        return f"ClusterCredentials({self.cluster!r}: {state})"


def _nothing() -> None:
    return None


class _NoClientCertificate:
    """The context asks for no client certificate (nothing to wait for)."""


_NO_IDENTITY = _NoClientCertificate()
