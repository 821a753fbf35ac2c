"""Per-node SVIDs and the SDS Secrets that carry them.

Each node gets its own key and X.509-SVID from the control plane's
:class:`~proxyless.controlplane.ca.DevCA`, served to that node only as two
SDS ``Secret`` resources with istio-agent's names (Envoy's SDS docs,
``envoy.extensions.transport_sockets.tls.v3.Secret``; istio-agent's
``security/pkg/nodeagent/cache``):

* ``default`` — ``tls_certificate``: the certificate chain (leaf, then the
  CA) and the private key, inline;
* ``ROOTCA`` — ``validation_context.trusted_ca``: the trust bundle, inline.

A certificate is issued for ``ttl`` (one hour by default) and re-issued,
with a new key, once 80% of its lifetime has passed, which leaves a fifth of
the lifetime for the push to land and for clients to move to the new one;
the push goes out as a new version of the node's Secrets. "Now" comes from
the injected :class:`~proxyless.clock.Clock` so tests drive renewal with a
fake clock. Certificates are kept per ``(node id, SPIFFE ID)``: a node
that reconnects keeps its SVID, and a node whose identity changes (the mesh
config changed) gets a new one.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxyless.clock import Clock, SystemClock
from proxyless.controlplane.ca import DevCA, IssuedCertificate

__all__ = [
    "DEFAULT_TTL",
    "RENEW_AT",
    "ROOT_SECRET",
    "WORKLOAD_SECRET",
    "Issued",
    "SvidStore",
    "root_secret",
    "workload_secret",
]

#: istio-agent's secret names (``security.WorkloadKeyCertResourceName``, ``RootCertReqResourceName``).
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
DEFAULT_TTL = 3600.0
#: Fraction of a certificate's lifetime after which it is re-issued.
RENEW_AT = 0.8


@dataclass(frozen=True, slots=True)
class Issued:
    """One SVID held for a node: what was issued, when, and when to renew it."""

    spiffe_id: str
    certificate: IssuedCertificate
    issued_at: float
    renew_at: float
    serial: int


def workload_secret(certificate: IssuedCertificate) -> secret_pb2.Secret:
    """The ``default`` Secret: chain and key, inline."""
    secret = secret_pb2.Secret(name=WORKLOAD_SECRET)
    secret.tls_certificate.certificate_chain.inline_bytes = certificate.chain_pem
    secret.tls_certificate.private_key.inline_bytes = certificate.key_pem
    return secret


def root_secret(roots_pem: bytes) -> secret_pb2.Secret:
    """The ``ROOTCA`` Secret: the trust bundle, inline."""
    secret = secret_pb2.Secret(name=ROOT_SECRET)
    secret.validation_context.trusted_ca.inline_bytes = roots_pem
    return secret


class SvidStore:
    """Issues and renews SVIDs, one per ``(node id, SPIFFE ID)``; thread-safe."""

    def __init__(self, ca: DevCA, *, ttl: float = DEFAULT_TTL, clock: Clock | None = None) -> None:
        if ttl <= 0:
            raise ValueError(f"certificate ttl must be positive, got {ttl}")
        self.ca = ca
        self.ttl = ttl
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], Issued] = {}
        self._serial = 0
        self.issued_total = 0

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    def _issue(self, spiffe: str) -> Issued:
        now = self.clock.time()
        cert = self.ca.issue(
            spiffe,
            ttl=_dt.timedelta(seconds=self.ttl),
            now=_dt.datetime.fromtimestamp(now, _dt.timezone.utc),
        )
        self._serial += 1
        self.issued_total += 1
        return Issued(spiffe, cert, now, now + RENEW_AT * self.ttl, self._serial)

    def get(self, key: str, spiffe: str) -> Issued:
        """The SVID held for ``key`` (a node id, or a file path) and ``spiffe``; issued on first use."""
        with self._lock:
            held = self._held.get((key, spiffe))
            if held is None:
                # a node has one identity at a time: drop what it held before
                for stale in [k for k in self._held if k[0] == key]:
                    del self._held[stale]
                held = self._held[(key, spiffe)] = self._issue(spiffe)
            return held

    def secrets(self, key: str, spiffe: str) -> dict[str, secret_pb2.Secret]:
        """``default`` and ``ROOTCA`` for this node (see the module docstring)."""
        held = self.get(key, spiffe)
        return {
            WORKLOAD_SECRET: workload_secret(held.certificate),
            ROOT_SECRET: root_secret(self.ca.roots_pem),
        }

    def renew_due(self) -> list[tuple[str, str]]:
        """Re-issue every SVID past its renewal point; the keys renewed."""
        now = self.clock.time()
        renewed = []
        with self._lock:
            for key, held in list(self._held.items()):
                if now >= held.renew_at:
                    self._held[key] = self._issue(held.spiffe_id)
                    renewed.append(key)
        return renewed

    def next_renewal(self) -> float | None:
        """The earliest renewal time held (the clock's ``time()`` scale), if any."""
        with self._lock:
            return min((h.renew_at for h in self._held.values()), default=None)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget the SVIDs of every key not in ``keys`` (nodes gone)."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._held if k[0] not in keep]:
                del self._held[key]

    def held(self) -> dict[tuple[str, str], Issued]:
        with self._lock:
            return dict(self._held)

    def __repr__(self) -> str:
        return f"SvidStore({self.ca.trust_domain!r}, ttl={self.ttl}, held={len(self._held)})"
