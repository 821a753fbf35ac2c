"""The demo's identity sections: who is who over mTLS, who called whom, who was refused.

- :func:`verified_servers` opens one TLS connection to each backend with the
  client's own credentials for the backend's cluster (``ClientTls``: its
  SVID, the trust bundle and the DestinationRule's SAN matchers, delivered
  by the control plane over SDS and CDS) and checks the presented
  certificate exactly as the client's channels do on every connection
  (:meth:`~proxyless.security.credentials.ClientTls.verify`). Until a
  backend has received its own certificate over SDS, its TLS handshakes
  fail; the demo waits for each to succeed before sending traffic.
- :func:`report_callers` prints what each backend's handler saw as its
  caller (:func:`proxyless.grpc.peer_identity`, reported by the backend).
- :func:`refused_call` makes one call (as a workload the AuthorizationPolicy
  does not allow) and :func:`allow_policies` names the policies that could
  have let it in, from the mesh config.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

import grpc

from proxyless.controlplane.istio.authz import applicable_policies
from proxyless.controlplane.istio.model import MeshConfig
from proxyless.errors import SecurityError
from proxyless.mesh import Mesh
from proxyless.security.credentials import ClientTls
from proxyless.security.peer import PeerCertificate

__all__ = [
    "allow_policies",
    "client_tls",
    "describe_matchers",
    "refused_call",
    "report_callers",
    "verified_servers",
]

Say = Callable[[str], None]


def client_tls(mesh: Mesh, target: str, cluster: str, timeout: float) -> ClientTls:
    """The client's current TLS credentials for ``cluster`` of ``target``
    (waits for the config and for the SDS secrets)."""
    runtime = mesh.target(target)
    snapshot, _ = runtime.state(timeout=timeout)
    credentials = runtime.cluster(snapshot, cluster).tls
    if credentials is None:
        raise SecurityError(f"cluster {cluster!r} is not a TLS cluster: is ISTIO_MUTUAL set?")
    return credentials.wait(timeout)


def _handshake(tls: ClientTls, endpoint: str, timeout: float) -> PeerCertificate:
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        with tls.context(("h2",)).wrap_socket(raw, server_hostname=tls.sni or None) as conn:
            der = conn.getpeercert(binary_form=True)
    return tls.verify(der, endpoint)


def verified_servers(
    credentials: Mapping[str, ClientTls], endpoints: Mapping[str, str], timeout: float
) -> dict[str, PeerCertificate]:
    """Backend name -> the certificate it presented, checked by the client's
    credentials of its cluster; waits up to ``timeout`` for every backend
    to serve its certificate. Raises the last connection error of a backend
    that did not, and at once the error of a certificate the client refuses
    (:class:`~proxyless.errors.IdentityMismatch`, ...)."""
    deadline = time.monotonic() + timeout
    out: dict[str, PeerCertificate] = {}
    for name, endpoint in endpoints.items():
        while True:
            try:
                out[name] = _handshake(credentials[name], endpoint, timeout=2.0)
                break
            except OSError:  # not serving yet, or no certificate yet (ssl.SSLError)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
    return out


def describe_matchers(tls: ClientTls) -> str:
    """The SAN matchers of ``tls`` as text (``exact spiffe://...``)."""
    parts = [f"{m.matcher.kind} {m.matcher.value}" for m in tls.matchers]
    return ", ".join(parts) or "any certificate of the trust bundle"


def report_callers(say: Say, callers: Mapping[str, list[str]], expected: str) -> bool:
    """Print ``<backend> saw caller <id>`` for each caller of each backend;
    True when every backend saw exactly ``expected``."""
    ok = True
    for name, seen in callers.items():
        for caller in seen or ["nobody"]:
            say(f"   {name} saw caller {caller}")
        ok &= seen == [expected]
    return ok


def allow_policies(mesh: MeshConfig, namespace: str, labels: Mapping[str, str]) -> list[str]:
    """The ALLOW AuthorizationPolicies applying to a workload, as text:
    ``default/reviews-viewers (allows cluster.local/ns/default/sa/productpage)``."""
    out = []
    for policy in applicable_policies(mesh, namespace, labels):
        if policy.action != "ALLOW":
            continue
        principals = [
            p for rule in policy.rules for src in rule.sources for p in src.get("principals", ())
        ]
        who = f"allows {', '.join(principals)}" if principals else "see its rules"
        out.append(f"{policy.source.namespace}/{policy.source.name} ({who})")
    return out


def refused_call(call: Callable[[], object]) -> tuple[grpc.StatusCode | None, str]:
    """Make the call: the status code and details it ended with, or
    ``(None, ...)`` when it succeeded."""
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        details = exc.details()
        return code, str(details or "")
    return None, "the call succeeded"
