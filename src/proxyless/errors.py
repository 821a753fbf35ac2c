"""The exception tree of proxyless.

Every error says where it happened. Messages carry the target, the resource
type and name, the xDS server and node id where they are known, so a user can
tell a wrong name from an unreachable control plane from a bad config::

    ProxylessError
    ├── BootstrapError              the bootstrap could not be read or is invalid
    ├── InvalidTarget               a target URI or URL proxyless cannot use
    ├── ResourceValidationError     an xDS resource failed validation (NACKed)
    ├── SecurityError               TLS material or a peer's identity is not usable
    │   ├── CertificateError            a certificate, key or trust bundle is bad or missing
    │   ├── CredentialsNotReady         a TLS cluster's certificates have not arrived yet
    │   └── IdentityMismatch            the peer presented an identity the config rejects
    ├── XdsConfigError              the config for a target is not usable (yet)
    │   ├── ControlPlaneUnreachable     no connected ADS stream, nothing cached
    │   ├── ResourceDoesNotExist        the server does not have the resource
    │   └── ResourceNacked              the resource was rejected, nothing cached
    ├── RoutingError                no way to route this request
    │   ├── NoMatchingVirtualHost
    │   ├── NoMatchingRoute
    │   └── NonForwardingRoute
    └── UpstreamError               the request could not be sent to a backend
        ├── ClusterNotAvailable         the cluster is missing or NACKed
        ├── NoHealthyEndpoints
        ├── CircuitBreakerOpen          a circuit breaker limit was reached
        ├── RetryBudgetExhausted
        └── DroppedByOverload           EDS ``drop_overloads`` dropped the request

Data-plane adapters map these to gRPC statuses (UNAVAILABLE unless a gRFC
says otherwise; never NOT_FOUND from the control plane, gRFC A54/A88) or to
httpx exceptions, with the message attached.
"""

from __future__ import annotations

__all__ = [
    "BootstrapError",
    "CertificateError",
    "CircuitBreakerOpen",
    "ClusterNotAvailable",
    "ControlPlaneUnreachable",
    "CredentialsNotReady",
    "DroppedByOverload",
    "IdentityMismatch",
    "InvalidTarget",
    "NoHealthyEndpoints",
    "NoMatchingRoute",
    "NoMatchingVirtualHost",
    "NonForwardingRoute",
    "ProxylessError",
    "ResourceDoesNotExist",
    "ResourceNacked",
    "ResourceValidationError",
    "RetryBudgetExhausted",
    "RoutingError",
    "SecurityError",
    "UpstreamError",
    "XdsConfigError",
]


class ProxylessError(Exception):
    """Base of every error raised by proxyless."""

    #: Envoy response-flag style short code (``NR``, ``UH``, ``UO`` ...), or "".
    flag: str = ""


class BootstrapError(ProxylessError):
    """The xDS bootstrap could not be read or is invalid.

    ``source`` names where it came from (``$GRPC_XDS_BOOTSTRAP=/path``,
    ``$GRPC_XDS_BOOTSTRAP_CONFIG``, a file path, or ``<dict>``); ``field`` is
    the JSON path of the offending field ("" for the document itself).
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"invalid xDS bootstrap ({where}): {problem}")


class InvalidTarget(ProxylessError, ValueError):
    """A target (``xds:///name``, ``xds://authority/name``) that cannot be used."""


class ResourceValidationError(ProxylessError):
    """An xDS resource failed validation; ``errors`` lists every problem found.

    Each entry of ``errors`` is ``"field.path: what was wrong"``.
    """

    def __init__(self, type_name: str, name: str, errors: list[str]) -> None:
        self.type_name = type_name
        self.name = name
        self.errors = list(errors)
        label = f"{type_name} {name!r}" if name else type_name
        super().__init__(f"invalid {label}: " + "; ".join(self.errors))


class SecurityError(ProxylessError):
    """TLS material or a peer's identity is not usable; the connection
    fails closed (never falls back to plaintext)."""

    flag = "UF"


class CertificateError(SecurityError):
    """A certificate, private key or trust bundle could not be used: the
    message names the file, SDS secret or certificate-provider instance."""


class CredentialsNotReady(SecurityError):
    """A TLS cluster's certificates (an SDS secret, a provider's files) have
    not arrived yet; calls wait for them within their deadline."""

    flag = "UF"


class IdentityMismatch(SecurityError):
    """The peer's certificate does not satisfy the SAN matchers; the message
    names the expected identities and the presented one."""

    flag = "UF"


class XdsConfigError(ProxylessError):
    """The xDS config needed for a request is not available."""

    flag = "NC"


class ControlPlaneUnreachable(XdsConfigError):
    flag = "UH"


class ResourceDoesNotExist(XdsConfigError):
    flag = "NC"


class ResourceNacked(XdsConfigError):
    flag = "NC"


class RoutingError(ProxylessError):
    """No route could be chosen for the request."""

    flag = "NR"


class NoMatchingVirtualHost(RoutingError):
    pass


class NoMatchingRoute(RoutingError):
    pass


class NonForwardingRoute(RoutingError):
    pass


class UpstreamError(ProxylessError):
    """The request could not be sent to, or failed at, a backend."""


class ClusterNotAvailable(UpstreamError):
    flag = "NC"


class NoHealthyEndpoints(UpstreamError):
    flag = "UH"


class CircuitBreakerOpen(UpstreamError):
    flag = "UO"


class RetryBudgetExhausted(UpstreamError):
    flag = "URX"


class DroppedByOverload(UpstreamError):
    flag = "DO"
