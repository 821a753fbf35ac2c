"""What one xDS-enabled server port serves: its inbound Listener, resolved (gRFC A36).

A :class:`ServingState` is built on the Mesh thread from each valid
``ServerListener`` and swapped whole: the Listener, one
:class:`~proxyless.security.server_credentials.ServerCredentials` per
distinct ``DownstreamTlsContext`` and, per filter chain, which internal
grpcio port serves it (plaintext, TLS, or mTLS). A :class:`PortWatch`
follows the Listener named by the bootstrap's
``server_listener_resource_name_template`` for one port: until the Listener
arrives, and once it is removed (or rejected with nothing cached) the port
is *not serving* — connections are closed at accept and calls fail
UNAVAILABLE — and the change is logged and reported to the
``serving_status_callback``. A NACKed update keeps the last good Listener.

Per call, :meth:`ServingState.check` applies what the Listener says about
requests on the connection's filter chain (which the port keeps current, and
whose connections it closes when their kind of security changes): the inline route configuration must select a route with
``non_forwarding_action`` (gRFC A36), and the chain's RBAC filters, with
per-route or per-virtual-host overrides (gRFC A41), must allow the call.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from proxyless.errors import SecurityError, XdsConfigError
from proxyless.grpc._chain_match import Connection, match_filter_chain
from proxyless.grpc._rbac import RbacRequest, authorize
from proxyless.resources.model.filters import DisabledFilterConfig, RbacFilterConfig
from proxyless.resources.model.route import NonForwardingAction, VirtualHost
from proxyless.resources.model.server_listener import (
    DownstreamTlsContext,
    FilterChain,
    ServerListener,
)
from proxyless.resources.types import LISTENER
from proxyless.routing.match import match_route
from proxyless.routing.request import RequestInfo
from proxyless.routing.vhost import select_virtual_host
from proxyless.security.credentials import SecretSources
from proxyless.security.peer import PeerCertificate
from proxyless.security.server_credentials import ServerCredentials, ServerTls
from proxyless.xds_client import XdsClient

__all__ = ["MTLS", "PLAIN", "TLS", "PortWatch", "ServingState", "ServingStatusCallback"]

log = logging.getLogger("proxyless.server")

#: The internal grpcio port kinds of one public port.
PLAIN, TLS, MTLS = "plain", "tls", "mtls"

#: ``callback(address, serving, error)``: the port's serving status changed.
ServingStatusCallback = Callable[[str, bool, Exception | None], None]

_RNG = random.Random(0)  # route matching draws only for runtime fractions
_MISSING = object()
_CACHE_MAX = 256


def _kind(chain: FilterChain) -> str:
    if chain.tls is None:
        return PLAIN
    return MTLS if chain.tls.require_client_certificate else TLS


@dataclass(frozen=True, slots=True, eq=False)
class ServingState:
    """One resolved Listener (see the module docstring)."""

    listener: ServerListener
    credentials: Mapping[DownstreamTlsContext, ServerCredentials]
    tls_by_kind: Mapping[str, ServerCredentials]
    _vhosts: dict[tuple[int, str], object] = field(default_factory=dict)
    _filters: dict[tuple[int, int], list[tuple[str, RbacFilterConfig]]] = field(
        default_factory=dict
    )

    def route(self, conn: Connection) -> tuple[FilterChain, str] | None:
        """The chain serving a new connection and its internal port kind."""
        chain = match_filter_chain(self.listener, conn)
        return None if chain is None else (chain, _kind(chain))

    def server_tls(self, kind: str) -> ServerTls:
        """The current material of the TLS or mTLS internal port; raises
        :class:`~proxyless.errors.SecurityError` when it is not ready."""
        creds = self.tls_by_kind.get(kind)
        if creds is None:
            raise XdsConfigError(f"listener {self.listener.name!r} has no {kind} filter chain")
        return creds.current()

    def check(
        self,
        conn: Connection,
        chain: FilterChain,
        path: str,
        headers: Mapping[str, str],
        peer: Callable[[], PeerCertificate | None],
    ) -> tuple[str, str] | None:
        """None if the call may proceed, else ``(code, message)`` with code
        ``"UNAVAILABLE"`` or ``"PERMISSION_DENIED"``. ``chain`` is the chain
        the connection is served by (kept current by the port when the
        Listener changes); virtual hosts and RBAC filter lists are cached
        per chain and route, so a call costs a route match and the RBAC
        evaluation."""
        authority = headers.get(":authority", "")
        key = (id(chain), authority)
        vhost = self._vhosts.get(key, _MISSING)
        if vhost is _MISSING:
            vhost = select_virtual_host(chain.hcm.route_config, authority)
            if len(self._vhosts) < _CACHE_MAX:
                self._vhosts[key] = vhost
        if vhost is None:
            return "UNAVAILABLE", f"no virtual host for {authority!r} on {self.listener.name!r}"
        assert isinstance(vhost, VirtualHost)
        request = RequestInfo(authority=authority, path=path, headers=headers)
        route = match_route(vhost, request, _RNG)
        if route is None:
            return "UNAVAILABLE", f"no route matches {path} on listener {self.listener.name!r}"
        if not isinstance(route.action, NonForwardingAction):
            return "UNAVAILABLE", "the matched route has no non_forwarding_action (gRFC A36)"
        fkey = (id(chain), id(route))
        filters = self._filters.get(fkey)
        if filters is None:
            filters = _rbac_filters(
                chain, route.typed_per_filter_config, vhost.typed_per_filter_config
            )
            self._filters[fkey] = filters
        if not filters:
            return None
        facts = RbacRequest(
            path=path,
            headers=headers,
            peer_ip=conn.peer_ip,
            peer_port=conn.peer_port,
            local_ip=conn.local_ip,
            local_port=conn.local_port,
            peer=peer(),
            authority=authority,
        )
        denied = authorize(filters, facts)
        return None if denied is None else ("PERMISSION_DENIED", denied)

    def close(self, keep: Sequence[ServerCredentials] = ()) -> None:
        for creds in self.credentials.values():
            if creds not in keep:
                creds.close()


def _rbac_filters(
    chain: FilterChain, *overrides: Mapping[str, object]
) -> list[tuple[str, RbacFilterConfig]]:
    out = []
    for f in chain.hcm.http_filters:
        if not isinstance(f.config, RbacFilterConfig):
            continue
        config: object = f.config
        for table in overrides:
            if f.name in table:
                config = table[f.name]
                break
        if isinstance(config, DisabledFilterConfig):
            continue
        if isinstance(config, RbacFilterConfig):
            out.append((f.name, config))
    return out


def build_state(
    listener: ServerListener,
    sources: SecretSources,
    previous: ServingState | None,
) -> ServingState:
    """Resolve ``listener``; reuses the credentials of contexts that did not
    change. Raises :class:`XdsConfigError` for a Listener one port cannot
    serve (two different TLS contexts behind one internal port)."""
    chains = [*listener.filter_chains]
    if listener.default_filter_chain is not None:
        chains.append(listener.default_filter_chain)
    by_kind: dict[str, DownstreamTlsContext] = {}
    for chain in chains:
        if chain.tls is None:
            continue
        kind = _kind(chain)
        seen = by_kind.setdefault(kind, chain.tls)
        if seen != chain.tls:
            raise XdsConfigError(
                f"listener {listener.name!r}: filter chains with different {kind} contexts "
                "(server certificates or trust) on one port are not supported"
            )
    old = previous.credentials if previous is not None else {}
    credentials = {
        tls: old.get(tls) or ServerCredentials(f"listener {listener.name!r} ({kind})", tls, sources)
        for kind, tls in by_kind.items()
    }
    return ServingState(
        listener=listener,
        credentials=credentials,
        tls_by_kind={kind: credentials[tls] for kind, tls in by_kind.items()},
    )


class PortWatch:
    """Follows the inbound Listener of one port (see the module docstring)."""

    def __init__(
        self,
        address: str,
        listener_name: str,
        host: str,
        port: int,
        client: XdsClient,
        sources: SecretSources,
        on_state: Callable[[ServingState | None], None],
        callback: ServingStatusCallback | None,
    ) -> None:
        self.address = address
        self.listener_name = listener_name
        self.host = host
        self.port = port
        self.state: ServingState | None = None
        self._sources = sources
        self._on_state = on_state
        self._callback = callback
        self._lock = threading.Lock()
        self._serving: bool | None = None
        self._cancel = client.watch(LISTENER, listener_name, self)

    # -- ResourceWatcher (Mesh thread) ------------------------------------------------------
    def on_changed(self, value: object) -> None:
        if not isinstance(value, ServerListener):
            self._not_serving(XdsConfigError(f"{self.listener_name!r} is not a server listener"))
            return
        if value.port != self.port or not same_host(value.host, self.host):
            self._not_serving(
                XdsConfigError(
                    f"listener {value.name!r} is for {value.host}:{value.port}, "
                    f"the server listens on {self.host}:{self.port} (gRFC A36)"
                )
            )
            return
        try:
            state = build_state(value, self._sources, self.state)
        except XdsConfigError as exc:
            self._not_serving(exc)
            return
        self._swap(state)
        self._report(True, None)

    def on_resource_error(self, error: Exception) -> None:
        self._not_serving(error)

    def on_ambient_error(self, error: Exception) -> None:
        log.warning("server %s: %s (serving with the last good listener)", self.address, error)

    # ---------------------------------------------------------------------------------------
    def _not_serving(self, error: Exception) -> None:
        self._swap(None)
        self._report(False, error)

    def _swap(self, state: ServingState | None) -> None:
        with self._lock:
            old, self.state = self.state, state
        self._on_state(state)
        if old is not None:
            keep = list(state.credentials.values()) if state is not None else []
            old.close(keep)

    def _report(self, serving: bool, error: Exception | None) -> None:
        if serving == self._serving and serving:
            return
        self._serving = serving
        if serving:
            log.info("server %s serving (listener %r)", self.address, self.listener_name)
        else:
            log.warning("server %s not serving: %s", self.address, error)
        if self._callback is not None:
            try:
                self._callback(self.address, serving, error)
            except Exception:
                log.exception("serving_status_callback failed")

    @property
    def serving(self) -> bool:
        return self.state is not None

    def close(self) -> None:
        self._cancel()
        self._swap(None)


def same_host(a: str, b: str) -> bool:
    """Whether two listening hosts are the same address (``[::]`` is ``::``,
    an empty host is ``0.0.0.0``)."""

    def norm(host: str) -> str:
        bare = host.strip("[]") or "0.0.0.0"
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            return bare.lower()

    return norm(a) == norm(b)


def security_ready(state: ServingState, kind: str) -> SecurityError | None:
    """None if a connection of ``kind`` can be handed to its port now."""
    if kind == PLAIN:
        return None
    try:
        state.server_tls(kind)
    except SecurityError as exc:
        return exc
    except XdsConfigError as exc:
        return SecurityError(str(exc))
    return None
