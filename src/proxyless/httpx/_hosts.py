"""Which HTTP requests go through the mesh, and what happens to the others.

A request URL ``http://HOST[:PORT]/...`` maps to the xDS target
``xds:///HOST[:PORT]`` (the port left out when the URL has none): its
Listener is the bootstrap's ``client_default_listener_resource_name_template``
applied to that name (gRFC A27/A47; ``%s`` by default), e.g.
``http://reviews.default.svc.cluster.local:9080/`` -> Listener
``reviews.default.svc.cluster.local:9080``. The virtual host is then chosen by
the request's ``Host`` header, as Envoy chooses it by ``:authority``.

Deciding, per host, without stalling (:class:`MeshHosts`, :class:`HostTable`):

1. **Never through the mesh**: IP literals and ``localhost``, unless an
   exact entry of ``hosts`` names them. They go straight to the fallback
   transport: no xDS request, no wait.
2. **Only the listed hosts**, when ``hosts`` is given: exact ``host`` or
   ``host:port``, or a wildcard ``*.suffix`` (optionally with ``:port``), or
   ``*`` for every host name. Other hosts go straight to the fallback.
3. **Candidates** (every other host name when ``hosts`` is None) are looked
   up once: the first request subscribes to the Listener and waits for the
   control plane's answer (at most the request's connect timeout, when it
   has one; :func:`decide`, or :func:`decide_async` off the event loop).
   It is in the mesh as soon as the Listener arrives; it is *not* in the
   mesh as soon as an LDS response that answers the subscription arrives
   without it (a fast negative answer: one round trip, not the 15 s
   does-not-exist timer), or the resource is reported deleted or does not
   exist. The subscription stays open, so a Listener created later takes
   over the host's next requests, and one deleted later sends them back to
   the fallback.
4. Hosts not in the mesh follow ``fallback``: ``"passthrough"`` (default,
   like Istio's ``outboundTrafficPolicy: ALLOW_ANY``) sends them through a
   plain httpx transport; ``"refuse"`` (like ``REGISTRY_ONLY``) fails them
   with :class:`~proxyless.httpx.MeshConnectError`.

A Listener that is NACKed or a control plane that cannot be reached never
falls back: the request fails with the reason (the mesh knows the host but
its config is unusable; bypassing it would silently skip its policies).

The fast negative answer reads the xDS client's per-type nonce: an LDS
response that arrives after the subscription was sent is the server's answer
to it. A push already in flight when the subscription went out can be taken
for that answer; the host then falls back for the requests made before the
Listener arrives, and uses the mesh from then on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import httpx

from proxyless.errors import ClusterNotAvailable, ProxylessError, ResourceDoesNotExist
from proxyless.httpx._errors import MeshConnectError, mesh_error
from proxyless.resources.types import LISTENER
from proxyless.runtime.target import DEFAULT_CONFIG_WAIT, TargetRuntime

if TYPE_CHECKING:
    from proxyless.mesh import Mesh

__all__ = [
    "FALLBACKS",
    "Fallback",
    "HostDecision",
    "HostTable",
    "MeshHosts",
    "decide",
    "decide_async",
    "is_ip_literal",
    "refused",
    "target_name",
]

Fallback: TypeAlias = Literal["passthrough", "refuse"]
FALLBACKS: Final = ("passthrough", "refuse")

#: How often a first request re-checks the control plane's answer.
_POLL: Final = 0.005


def is_ip_literal(host: str) -> bool:
    """True for IPv4/IPv6 literals (brackets allowed)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def target_name(host: str, port: int | None) -> str:
    """The data-plane name for a URL's host and port: ``host:port`` or ``host``."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class _Pattern:
    host: str  # lower case; "*" or "*.suffix" for wildcards
    port: int | None

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def _parse_pattern(text: str) -> _Pattern:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"hosts: {text!r} is not a host pattern (e.g. 'reviews:9080', '*.svc.cluster.local')"
        )
    raw = text.strip().lower()
    if "://" in raw or "/" in raw:
        raise ValueError(f"hosts: {text!r} must be a host or host:port, not a URL")
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end == -1:
            raise ValueError(f"hosts: {text!r} has an unclosed '['")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"hosts: {text!r} has a bad port")
            port = int(rest[1:])
    elif raw.count(":") == 1:
        host, _, p = raw.partition(":")
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ValueError(f"hosts: {text!r} has a bad port {p!r}")
        port = int(p)
    if not host or (
        "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[1:])
    ):
        raise ValueError(f"hosts: {text!r}: only a leading '*.' wildcard or '*' is allowed")
    return _Pattern(host, port)


class MeshHosts:
    """The user's choice of which hosts go through the mesh (module docstring)."""

    __slots__ = ("fallback", "patterns")

    def __init__(
        self, hosts: Iterable[str] | None = None, fallback: Fallback = "passthrough"
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, not {fallback!r}")
        self.fallback: Fallback = fallback
        if isinstance(hosts, str):
            hosts = [hosts]
        self.patterns: tuple[_Pattern, ...] | None = (
            None if hosts is None else tuple(_parse_pattern(h) for h in hosts)
        )

    def candidate(self, host: str, port: int | None) -> bool:
        """Whether ``host[:port]`` may go through the mesh (rules 1 and 2)."""
        host = host.lower()
        patterns = self.patterns
        if patterns is not None:
            for p in patterns:
                if p.matches(host, port):
                    if p.host.startswith("*") and (host == "localhost" or is_ip_literal(host)):
                        return False
                    return True
            return False
        return host != "localhost" and not is_ip_literal(host)

    def __repr__(self) -> str:
        shown = (
            "any host name"
            if self.patterns is None
            else [p.host + (f":{p.port}" if p.port else "") for p in self.patterns]
        )
        return f"MeshHosts({shown}, fallback={self.fallback!r})"


@dataclass(frozen=True, slots=True)
class HostDecision:
    """Where one host's requests go: through the mesh (``in_mesh``) or to the
    fallback, ``reason`` saying why. ``runtime`` is the host's xDS target when
    it was looked up (kept for hosts found missing, so a Listener created
    later is noticed)."""

    runtime: TargetRuntime | None
    in_mesh: bool
    reason: str = ""


# -- the LDS answer probe (reads the xDS client's state on its loop) --------------------


def _lds_view(mesh: Mesh, listener: str) -> tuple[str, str, bool]:
    """(LDS nonce, resource status, cached) of ``listener``."""
    try:
        nonce, status, cached = mesh.xds_client.probe(LISTENER, listener)
    except Exception:
        return "", "", False
    return nonce, status.value if status is not None else "", cached


_probes: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
_probes_lock = threading.Lock()


def _probe_start(mesh: Mesh, listener: str, fresh: bool) -> str | None:
    """The LDS nonce when ``listener`` was subscribed (None: unknown)."""
    with _probes_lock:
        known = _probes.setdefault(mesh, {})
        if listener in known:
            return known[listener]
    if not fresh:
        return None
    nonce, _, _ = _lds_view(mesh, listener)
    with _probes_lock:
        return _probes.setdefault(mesh, {}).setdefault(listener, nonce)


class HostTable:
    """Per transport: the decision for each host seen (module docstring)."""

    def __init__(self, mesh: Mesh, hosts: MeshHosts) -> None:
        self.mesh = mesh
        self.hosts = hosts
        self._decisions: dict[tuple[str, int | None], HostDecision] = {}
        self._lock = threading.Lock()

    def cached(self, host: str, port: int | None) -> HostDecision | None:
        """The decision for a host already seen, in O(1); None if it needs :meth:`decide`."""
        d = self._decisions.get((host, port))
        if d is None:
            return None
        rt = d.runtime
        if rt is None:
            return d
        if d.in_mesh:
            # in the mesh while its config is usable; otherwise look again
            return d if rt.current is not None else None
        if rt.current is not None:  # the Listener arrived after all
            d = HostDecision(rt, True)
            self._decisions[(host, port)] = d
        return d

    def decide(self, host: str, port: int | None, wait: float | None) -> HostDecision:
        """Decide for ``host`` (blocking up to ``wait`` seconds for the control
        plane's first answer); raises :class:`~proxyless.errors.ProxylessError`
        when the host is in the mesh but cannot be used."""
        key = (host, port)
        if not self.hosts.candidate(host, port):
            decision = HostDecision(None, False, f"{host} is not a mesh host (hosts={self.hosts})")
            self._decisions[key] = decision
            return decision
        name = target_name(host, port)
        mesh = self.mesh
        listener = mesh.bootstrap.listener_resource_name(None, name)
        fresh = not mesh.watching(listener)
        rt = mesh.target(f"xds:///{name}")
        nonce0 = _probe_start(mesh, listener, fresh)
        budget = DEFAULT_CONFIG_WAIT if wait is None else max(0.0, wait)
        deadline = time.monotonic() + budget
        while True:
            if rt.current is not None:
                decision = HostDecision(rt, True)
                break
            snap = rt.watcher.snapshot
            if snap is not None and snap.error is not None:
                err = snap.error
                if isinstance(err, ResourceDoesNotExist) and snap.listener is None:
                    decision = HostDecision(rt, False, f"listener {listener!r} does not exist")
                    break
                raise rt.config_error(err)
            nonce, status, cached = _lds_view(mesh, listener)
            if status == "DOES_NOT_EXIST":
                decision = HostDecision(rt, False, f"listener {listener!r} does not exist")
                break
            if (
                not cached
                and status == "REQUESTED"
                and nonce0 is not None
                and nonce
                and nonce != nonce0
            ):
                decision = HostDecision(
                    rt,
                    False,
                    f"the control plane's LDS answer does not include listener {listener!r}",
                )
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise rt.config_error(None, waited=budget)
            if snap is None:
                rt.watcher.wait(min(remaining, _POLL))
            else:
                time.sleep(min(remaining, _POLL))
        with self._lock:
            self._decisions[key] = decision
        return decision


def _config_wait(request: httpx.Request) -> float | None:
    """How long a host's first lookup may wait: the request's connect timeout."""
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, Mapping):
        wait = timeouts.get("connect")
        if isinstance(wait, (int, float)):
            return float(wait)
    return None


def decide(table: HostTable, request: httpx.Request, host: str, port: int | None) -> HostDecision:
    """:meth:`HostTable.decide` for ``request``'s host, waiting at most its
    connect timeout; a failure becomes the request's httpx error."""
    try:
        return table.decide(host, port, _config_wait(request))
    except ProxylessError as exc:
        raise mesh_error(exc, request) from None


async def decide_async(
    table: HostTable, request: httpx.Request, host: str, port: int | None
) -> HostDecision:
    """:func:`decide` in the default executor, so its wait never blocks the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, decide, table, request, host, port)


def refused(request: httpx.Request, decision: HostDecision) -> MeshConnectError:
    """The error for a host outside the mesh with ``fallback="refuse"``."""
    err = ClusterNotAvailable(
        f"{decision.reason}; hosts outside the mesh are refused (fallback='refuse')"
    )
    exc = mesh_error(err, request, "config")
    assert isinstance(exc, MeshConnectError)
    return exc
