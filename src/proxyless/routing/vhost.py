"""Virtual host selection by authority (gRFC A28, Envoy ``VirtualHost.domains``).

Domain patterns and their precedence, as Envoy documents them in
``route_components.proto``:

1. an exact domain (``reviews.default.svc``),
2. the longest suffix wildcard (``*.default.svc``),
3. the longest prefix wildcard (``reviews.*``),
4. the catch-all ``*``.

A pattern is a suffix wildcard when it starts with ``*``, else a prefix
wildcard when it ends with ``*``; a ``*`` anywhere else is an ordinary
character, so ``svc.*:9000`` or ``a-*:80`` match only that exact authority
(Envoy's ``RouteMatcher`` sorts domains the same way).

Matching is case-insensitive (domains are lower-cased by the parser, the
authority here). A wildcard never matches the empty string: ``*-bar.foo.com``
matches ``baz-bar.foo.com`` but not ``-bar.foo.com``. When two virtual hosts
list the same pattern the first one wins.

Ports: the authority is matched as given, port included. Envoy's
``strip_any_host_port`` / ``strip_matching_host_port`` are off by default,
so ``reviews:9080`` does not match a virtual host whose only domain is
``reviews``; it matches ``reviews:9080``, ``reviews*``-style wildcards, or
``*``. Control planes that serve proxyless clients (Istio, Traffic Director)
list each host both with and without the port, so this rarely matters, but
it is the behaviour to expect from Envoy and grpc alike.

Selection runs per request, so :class:`VirtualHostCache` indexes one
RouteConfiguration once and remembers recent answers (bounded).
"""

from __future__ import annotations

from typing import Any

from proxyless.resources.model import RouteConfiguration, VirtualHost

__all__ = ["VirtualHostCache", "domain_match_rank", "select_virtual_host"]

# Ranks for the four pattern kinds; higher wins, then the longer pattern.
_EXACT, _SUFFIX, _PREFIX, _STAR = 3, 2, 1, 0


def domain_match_rank(pattern: str, host: str) -> tuple[int, int] | None:
    """How well ``pattern`` matches ``host`` (both lower case), or None.

    The result orders matches by Envoy's precedence: ``(kind, length)`` with
    kind 3 exact, 2 suffix wildcard, 1 prefix wildcard, 0 ``*``.
    """
    if pattern == "*":
        return (_STAR, 1)
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if len(host) > len(suffix) and host.endswith(suffix):
            return (_SUFFIX, len(pattern))
        return None
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        if len(host) > len(prefix) and host.startswith(prefix):
            return (_PREFIX, len(pattern))
        return None
    if pattern == host:
        return (_EXACT, len(pattern))
    return None


def select_virtual_host(rc: RouteConfiguration, authority: str) -> VirtualHost | None:
    """The virtual host of ``rc`` serving ``authority`` (no caching), or None."""
    host = authority.lower()
    best: VirtualHost | None = None
    best_rank: tuple[int, int] | None = None
    for vhost in rc.virtual_hosts:
        for domain in vhost.domains:
            rank = domain_match_rank(domain, host)
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = vhost, rank
    return best


class VirtualHostCache:
    """Virtual host lookup for one RouteConfiguration, indexed and memoized.

    Build one per RouteConfiguration (they are immutable) and call
    :meth:`select` per request. Up to ``max_entries`` distinct authorities
    are remembered, misses included; when full the memo is emptied and
    refilled (authorities per target are few, so this is rare). Safe to use
    from several threads: a lost memo entry only costs a recomputation.
    """

    __slots__ = (
        "_exact",
        "_memo",
        "_prefix",
        "_star",
        "_suffix",
        "max_entries",
        "results",
        "route_config",
    )

    def __init__(self, route_config: RouteConfiguration, max_entries: int = 1024) -> None:
        self.route_config = route_config
        self.max_entries = max_entries
        self._exact: dict[str, VirtualHost] = {}
        suffix: list[tuple[str, VirtualHost]] = []
        prefix: list[tuple[str, VirtualHost]] = []
        self._star: VirtualHost | None = None
        for vhost in route_config.virtual_hosts:
            for domain in vhost.domains:
                if domain == "*":
                    if self._star is None:
                        self._star = vhost
                elif domain.startswith("*"):
                    suffix.append((domain[1:], vhost))
                elif domain.endswith("*"):
                    prefix.append((domain[:-1], vhost))
                else:
                    self._exact.setdefault(domain, vhost)
        # Longest pattern first; sorted() is stable so the first listed wins ties.
        self._suffix = tuple(sorted(suffix, key=lambda item: -len(item[0])))
        self._prefix = tuple(sorted(prefix, key=lambda item: -len(item[0])))
        self._memo: dict[str, VirtualHost | None] = {}
        #: memo of :func:`proxyless.routing.resolve` results, keyed by
        #: (id(route), choice); valid because the RouteConfiguration is immutable
        self.results: dict[tuple[int, int], Any] = {}

    def select(self, authority: str) -> VirtualHost | None:
        """The virtual host serving ``authority``, or None when none matches."""
        try:
            return self._memo[authority]
        except KeyError:
            pass
        found = self._lookup(authority.lower())
        memo = self._memo
        if len(memo) >= self.max_entries:
            memo.clear()
        memo[authority] = found
        return found

    def _lookup(self, host: str) -> VirtualHost | None:
        found = self._exact.get(host)
        if found is not None:
            return found
        size = len(host)
        for suffix, vhost in self._suffix:
            if size > len(suffix) and host.endswith(suffix):
                return vhost
        for prefix, vhost in self._prefix:
            if size > len(prefix) and host.startswith(prefix):
                return vhost
        return self._star

    def domains(self) -> list[str]:
        """Every domain on offer, in configuration order (for error messages)."""
        return [d for vhost in self.route_config.virtual_hosts for d in vhost.domains]

    def __repr__(self) -> str:
        return (
            f"VirtualHostCache({self.route_config.name!r}, "
            f"{len(self.route_config.virtual_hosts)} virtual hosts, {len(self._memo)} cached)"
        )
