"""Client-side DNS for STRICT_DNS clusters: host names -> endpoint addresses.

Envoy's STRICT_DNS cluster (Envoy docs, "Service discovery: Strict DNS")
resolves every endpoint of its ``load_assignment`` and uses every address
returned as an endpoint, resolving again every ``dns_refresh_rate`` (default
5 s). proxyless does the same for the STRICT_DNS clusters a control plane
sends (istiod and the embedded control plane make them from ServiceEntries
with ``resolution: DNS``):

* each endpoint whose address is a host name becomes one endpoint per
  address ``getaddrinfo`` returns for it (in the order returned, duplicates
  dropped), keeping its port, weight, health and locality; its host name
  stays as ``Endpoint.hostname``; IP endpoints are kept as they are;
* ``dns_lookup_family`` V4_ONLY / V6_ONLY restrict the lookup (AUTO, ALL
  and V4_PREFERRED ask for both);
* resolution runs on a short-lived daemon thread, one lookup pass at a time
  per cluster, never on the request path; the result is handed to the
  Mesh's loop. Until the first pass the cluster is pending (the target's
  previous config stays in force, as for EDS); a first pass in which a host
  fails makes the cluster unusable with the resolver's error; a later
  failure keeps the previous addresses of that host (Envoy keeps its hosts
  on failure too).

LOGICAL_DNS clusters (gRFC A37) are not resolved here: their one endpoint
keeps its host name and each new connection resolves it and uses the first
address that connects, which is what LOGICAL_DNS means.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence

from proxyless.clock import Clock, TimerHandle
from proxyless.errors import ClusterNotAvailable
from proxyless.resources.model import Cluster, ClusterLoadAssignment, Endpoint

__all__ = [
    "DEFAULT_REFRESH",
    "DnsResolution",
    "Resolver",
    "hostnames",
    "resolved_assignment",
    "system_resolver",
]

log = logging.getLogger("proxyless.dns")

DEFAULT_REFRESH = 5.0
#: ``resolver(host, family)`` -> addresses; raises OSError when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str]]
_FAMILIES = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}


def system_resolver(host: str, family: int) -> list[str]:
    """Addresses of ``host`` from ``socket.getaddrinfo``, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return True
    return False


def hostnames(assignment: ClusterLoadAssignment) -> list[str]:
    """The host names (not IPs) the endpoints of ``assignment`` name, in order."""
    names: dict[str, None] = {}
    for priority in assignment.priorities:
        for locality in priority:
            for ep in locality.endpoints:
                if not _is_ip(ep.address):
                    names[ep.address] = None
    return list(names)


def resolved_assignment(
    assignment: ClusterLoadAssignment, addresses: Mapping[str, Sequence[str]]
) -> ClusterLoadAssignment:
    """``assignment`` with each host-name endpoint replaced by its ``addresses``."""
    priorities = []
    for priority in assignment.priorities:
        localities = []
        for locality in priority:
            seen: set[tuple[str, int]] = set()
            endpoints: list[Endpoint] = []
            for ep in locality.endpoints:
                if _is_ip(ep.address):
                    expanded = [ep]
                else:
                    expanded = [
                        dataclasses.replace(ep, address=ip, hostname=ep.hostname or ep.address)
                        for ip in addresses.get(ep.address, ())
                    ]
                for item in expanded:
                    if item.key not in seen:
                        seen.add(item.key)
                        endpoints.append(item)
            localities.append(dataclasses.replace(locality, endpoints=tuple(endpoints)))
        priorities.append(tuple(localities))
    return dataclasses.replace(assignment, priorities=tuple(priorities))


class DnsResolution:
    """Keeps the resolved endpoints of one STRICT_DNS cluster (see the module docstring).

    Lives on the Mesh's loop: ``post`` hands a callable to that loop from any
    thread, ``clock`` schedules the refresh there, ``on_change`` is called
    on the loop when :attr:`value` or :attr:`error` changed.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        clock: Clock,
        post: Callable[[Callable[[], None]], None],
        on_change: Callable[[], None],
        resolver: Resolver = system_resolver,
    ) -> None:
        assert cluster.load_assignment is not None
        self.cluster = cluster
        self._assignment = cluster.load_assignment
        self._clock = clock
        self._post = post
        self._on_change = on_change
        self._resolver = resolver
        self._family = _FAMILIES.get(cluster.dns_lookup_family, socket.AF_UNSPEC)
        self._names = hostnames(self._assignment)
        self._known: dict[str, Sequence[str]] = {}
        self._timer: TimerHandle | None = None
        self._cancelled = False
        self.value: ClusterLoadAssignment | None = None
        self.error: Exception | None = None

    def start(self) -> DnsResolution:
        if not self._names:
            self.value = self._assignment
        else:
            self._lookup()
        return self

    def cancel(self) -> None:
        self._cancelled = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _lookup(self) -> None:
        self._timer = None
        if self._cancelled:
            return
        names, family, resolver = list(self._names), self._family, self._resolver

        def work() -> None:
            found: dict[str, Sequence[str]] = {}
            failed: dict[str, str] = {}
            for name in names:
                try:
                    found[name] = resolver(name, family)
                except (OSError, UnicodeError, ValueError) as exc:
                    # getaddrinfo raises UnicodeError for a name IDNA cannot encode
                    failed[name] = str(exc) or type(exc).__name__
            self._post(lambda: self._done(found, failed))

        threading.Thread(
            target=work, name=f"proxyless-dns {self.cluster.name}", daemon=True
        ).start()

    def _done(self, found: Mapping[str, Sequence[str]], failed: Mapping[str, str]) -> None:
        if self._cancelled:
            return
        for name, why in failed.items():
            log.warning("cluster %r: cannot resolve %r: %s", self.cluster.name, name, why)
        known = {**self._known, **{n: a for n, a in found.items() if a}}
        missing = [n for n in self._names if n not in known]
        if missing and self.value is None:
            detail = "; ".join(f"{n}: {failed.get(n, 'no address')}" for n in missing)
            error = ClusterNotAvailable(
                f"cluster {self.cluster.name!r}: DNS resolution failed ({detail})"
            )
            changed = self.error is None or str(self.error) != str(error)
            self.error = error
        else:
            value = resolved_assignment(self._assignment, known)
            changed = value != self.value or self.error is not None
            self.value, self.error = value, None
        self._known = known
        refresh = self.cluster.dns_refresh_rate or DEFAULT_REFRESH
        self._timer = self._clock.call_later(refresh, self._lookup)
        if changed:
            self._on_change()
