"""SDS secrets: certificates and trust bundles by name, on the ADS stream or
from a separate SDS server.

Implements Envoy's Secret Discovery Service (``envoy.service.secret.v3``;
Envoy docs "Secret discovery service (SDS)") for clients:

- An ``SdsSecretConfig`` without ``sds_config`` (or ``ads``/``self``)
  watches the ``Secret`` resource on the Mesh's ADS stream.
- One with an ``api_config_source`` naming a gRPC service watches it on a
  separate SDS server: one ``StreamSecrets`` stream per server (the
  State-of-the-World protocol of ADS, one type, this process's node), as
  istio-agent (secrets ``default`` and ``ROOTCA``) and SPIRE agent serve it
  on a unix socket. The stream is an :class:`~proxyless.xds_client.XdsClient`
  of its own — ACK/NACK, the does-not-exist timer and the reconnect backoff
  are the ADS stream's. A ``google_grpc`` target is used as written; an
  ``envoy_grpc`` cluster must be mapped to a target with
  :meth:`SdsSecrets.define_cluster` (Envoy takes it from a static cluster,
  which a proxyless client has none of).

What a watch delivers (to :class:`~proxyless.security.credentials.ClusterCredentials`):
a secret with ``tls_certificate`` an :class:`Identity` (source ``SDS secret
'<name>'``); one with ``validation_context`` a :class:`TrustBundle` of its
``trusted_ca``. A resource error (the secret does not exist, the server is
unreachable before it was ever received) delivers
:class:`~proxyless.errors.CredentialsNotReady` naming the secret; a NACKed
secret, or one whose certificate does not load, a
:class:`~proxyless.errors.CertificateError` naming it (the cluster keeps its
last good material). Ambient errors are logged and keep the material.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from proxyless.bootstrap.model import Bootstrap, ChannelCreds, XdsServer
from proxyless.clock import Clock
from proxyless.errors import (
    CertificateError,
    ControlPlaneUnreachable,
    CredentialsNotReady,
    ResourceDoesNotExist,
    SecurityError,
)
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    SdsSecretConfig,
    SdsServer,
    Secret,
    TlsIdentity,
)
from proxyless.resources.types import SECRET
from proxyless.security.credentials import Material, read_data_source
from proxyless.security.material import Identity, TrustBundle, load_identity, load_trust
from proxyless.security.providers import ExpiryLog
from proxyless.xds_client import DOES_NOT_EXIST_TIMEOUT, XdsClient
from proxyless.xds_client.transport import SDS_METHOD, AdsTransport

__all__ = ["SdsSecrets", "secret_material"]

log = logging.getLogger("proxyless.security")

Deliver = Callable[[Material], None]
Unsubscribe = Callable[[], None]


def secret_material(secret: Secret, *, identity: bool, now: float) -> Identity | TrustBundle:
    """The :class:`Identity` (``identity``) or :class:`TrustBundle` a Secret
    holds; raises :class:`~proxyless.errors.CertificateError` naming it."""
    where = f"SDS secret {secret.name!r}"
    if identity:
        cert = secret.tls_certificate
        if cert is None:
            raise CertificateError(f"{where} holds a validation context, not a tls_certificate")
        chain, _ = read_data_source(cert.certificate_chain, "certificate chain")
        key, _ = read_data_source(cert.private_key, "private key")
        return load_identity(chain, key, source=where, now=now)
    validation = secret.validation_context
    if validation is None:
        raise CertificateError(f"{where} holds a tls_certificate, not a validation_context")
    if validation.match_subject_alt_names:
        raise CertificateError(
            f"{where}: SAN matchers in an SDS validation context are not supported; "
            "set them in the cluster's default_validation_context"
        )
    if validation.trusted_ca is None:
        raise CertificateError(f"{where}: the validation context has no trusted_ca")
    pem, _ = read_data_source(validation.trusted_ca, "trusted CA")
    return load_trust(pem, source=where)


class _SecretWatcher:
    """Turns one Secret watch into material deliveries (three-call protocol,
    :mod:`proxyless.xds_client.watcher`)."""

    def __init__(
        self,
        name: str,
        where: str,
        *,
        identity: bool,
        deliver: Deliver,
        now: Callable[[], float],
        expiry: ExpiryLog,
    ) -> None:
        self._name = name
        self._where = where
        self._identity = identity
        self._deliver = deliver
        self._now = now
        self._expiry = expiry

    def on_changed(self, value: Any) -> None:
        assert isinstance(value, Secret)
        now = self._now()
        try:
            material = secret_material(value, identity=self._identity, now=now)
        except SecurityError as exc:
            log.error("%s: %s", self._where, exc)
            self._deliver(exc)
            return
        if isinstance(material, Identity):
            self._expiry.check(material, now, f"SDS secret {self._name!r}")
        self._deliver(material)

    def on_resource_error(self, error: Exception) -> None:
        label = f"SDS secret {self._name!r} ({self._where})"
        if isinstance(error, (ResourceDoesNotExist, ControlPlaneUnreachable)):
            self._deliver(CredentialsNotReady(f"{label}: {error}"))
        else:
            self._deliver(CertificateError(f"{label}: {error}"))

    def on_ambient_error(self, error: Exception) -> None:
        log.warning(
            "SDS secret %r (%s): %s; keeping the last good one", self._name, self._where, error
        )


class SdsSecrets:
    """Watches SDS secrets for clusters (see the module docstring);
    registered on ``Mesh.secrets`` as ``sds_identity`` and ``sds_trust``."""

    def __init__(
        self,
        ads: XdsClient,
        bootstrap: Bootstrap,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Clock,
        rng: random.Random,
        now: Callable[[], float],
        does_not_exist_timeout: float = DOES_NOT_EXIST_TIMEOUT,
        transport_factory: Callable[..., AdsTransport] = AdsTransport,
    ) -> None:
        self._ads = ads
        self._bootstrap = bootstrap
        self._loop = loop
        self._clock = clock
        self._rng = rng
        self._now = now
        self._dne_timeout = does_not_exist_timeout
        self._transport_factory = transport_factory
        self._lock = threading.Lock()
        self._clusters: dict[str, str] = {}
        self._clients: dict[str, XdsClient] = {}
        self._expiry = ExpiryLog()
        self._closed = False

    def define_cluster(self, name: str, target: str) -> None:
        """Map an ``envoy_grpc`` cluster name to the target of its SDS server
        (e.g. ``"sds-grpc"`` -> ``"unix:/var/run/secrets/workload-spiffe-uds/socket"``)."""
        with self._lock:
            self._clusters[name] = target

    def client(self, target: str) -> XdsClient:
        """The SDS stream's client for ``target`` (one per server, made on first use)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("SdsSecrets is closed")
            client = self._clients.get(target)
            if client is None:
                server = XdsServer(server_uri=target, channel_creds=ChannelCreds("insecure"))
                bootstrap = dataclasses.replace(
                    self._bootstrap, xds_servers=(server,), authorities={}
                )
                client = XdsClient(
                    bootstrap,
                    self._loop,
                    resource_types=(SECRET,),
                    clock=self._clock,
                    rng=self._rng,
                    does_not_exist_timeout=self._dne_timeout,
                    transport_factory=functools.partial(self._transport_factory, method=SDS_METHOD),
                )
                self._clients[target] = client
            return client

    def _resolve(self, server: SdsServer) -> str | None:
        if server.target:
            return server.target
        with self._lock:
            return self._clusters.get(server.cluster)

    def _watch(self, ref: SdsSecretConfig, deliver: Deliver, *, identity: bool) -> Unsubscribe:
        if ref.server is None:
            client, where = self._ads, "the ADS stream"
        else:
            target = self._resolve(ref.server)
            if target is None:
                with self._lock:
                    known = ", ".join(repr(n) for n in sorted(self._clusters)) or "none"
                deliver(
                    CredentialsNotReady(
                        f"SDS secret {ref.name!r}: its SDS server, envoy_grpc cluster "
                        f"{ref.server.cluster!r}, is not defined (defined: {known}); map it to "
                        "a target with Mesh.sds.define_cluster() or use google_grpc target_uri"
                    )
                )
                return _nothing
            client, where = self.client(target), f"SDS server {target}"
        watcher = _SecretWatcher(
            ref.name,
            where,
            identity=identity,
            deliver=deliver,
            now=self._now,
            expiry=self._expiry,
        )
        return client.watch(SECRET, ref.name, watcher)

    def watch_identity(self, ref: TlsIdentity, deliver: Deliver) -> Unsubscribe:
        """An :class:`~proxyless.security.credentials.IdentityHandler`."""
        assert isinstance(ref, SdsSecretConfig)
        return self._watch(ref, deliver, identity=True)

    def watch_trust(
        self, ref: SdsSecretConfig | CertificateProviderInstance, deliver: Deliver
    ) -> Unsubscribe:
        """A :class:`~proxyless.security.credentials.TrustHandler`."""
        assert isinstance(ref, SdsSecretConfig)
        return self._watch(ref, deliver, identity=False)

    def close(self) -> None:
        """Close every separate SDS stream (the ADS stream is the Mesh's)."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __repr__(self) -> str:
        with self._lock:
            servers = ", ".join(sorted(self._clients)) or "none"
        return f"SdsSecrets(separate servers: {servers})"


def _nothing() -> None:
    return None
