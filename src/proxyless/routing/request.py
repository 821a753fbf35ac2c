"""What the routing layer sees of a request, whatever the transport.

The gRPC adapter and the httpx transports both describe a request as a
:class:`RequestInfo`; every routing function (virtual host choice, route
match, cluster choice, hash computation) reads only this. Header names are
lower case and repeated values are already joined with ``","`` (gRFC A28).
For HTTP the headers mapping may also keep the separate values of each
header sent more than once (:class:`HeaderLists`), because Envoy (since
1.39, runtime flag ``envoy.reloadable_features.match_headers_individually``,
on by default) matches a header matcher against each value and not against
the join.

:func:`header_value` applies the header visibility rules of gRFC A28 for
gRPC and of Envoy's router for HTTP:

- gRPC: only application metadata plus ``content-type`` (``application/grpc``
  when the transport has not added it); names ending in ``-bin`` are treated
  as absent; pseudo-headers (``:path`` ...) are never visible.
- HTTP: the headers as sent, plus the pseudo-headers ``:method``, ``:path``
  (with the query string, as Envoy's ``:path``), ``:authority`` and
  ``:scheme``; ``host`` is the authority too (Envoy keeps HTTP/1's Host as
  ``:authority`` and finds it under either name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "HeaderLists",
    "RequestInfo",
    "header_value",
    "header_values",
    "parse_query",
    "repeated_headers",
]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return _NO_HEADERS


class HeaderLists(Protocol):
    """A request's headers that also keep the separate values of repeated
    headers (the httpx transports' headers mapping implements it)."""

    def repeated(self) -> Mapping[str, tuple[str, ...]] | None:
        """The lower-case names sent more than once, each with its values in
        the order sent (no other names); None when no name was repeated."""
        ...


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One request as the routing layer sees it.

    ``authority`` is the target's authority (gRPC: the ``xds:///`` target's
    name, e.g. ``reviews:9080``; HTTP: the URL's host[:port]). ``path`` is
    ``/package.Service/Method`` for gRPC and the URL path without the query
    for HTTP; ``query`` is the raw query string without ``?`` ("" for none).
    ``headers`` holds lower-case names with repeated values joined by ``","``.
    For HTTP it may also be a :class:`HeaderLists` (it has ``repeated()``):
    header matchers then test a repeated header's values one by one. It is
    asked only when a header matcher runs, so the transports build it lazily;
    gRPC requests never consult it.
    ``source_ip`` is the local address of the connection, used only by the
    ``connection_properties`` hash policy. ``scheme`` feeds the HTTP
    ``:scheme`` pseudo-header. ``bare_query``: the URL ends in a ``?`` with
    nothing after it, which Envoy's ``:path`` keeps.
    """

    authority: str
    path: str
    query: str = ""
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    is_grpc: bool = True
    source_ip: str = ""
    scheme: str = "http"
    bare_query: bool = False

    @property
    def path_and_query(self) -> str:
        """The path with ``?query`` appended when there is one (Envoy's ``:path``)."""
        return f"{self.path}?{self.query}" if self.query or self.bare_query else self.path


def header_value(request: RequestInfo, name: str) -> str | None:
    """The value a header matcher or hash policy sees for ``name``; None if absent.

    ``name`` must be lower case (the resource parsers lower-case it).
    """
    if request.is_grpc:
        if name.startswith(":") or name.endswith("-bin"):
            return None
        if name == "content-type":
            return request.headers.get(name) or "application/grpc"
        return request.headers.get(name)
    if name.startswith(":"):
        if name == ":method":
            return request.method
        if name == ":path":
            return request.path_and_query
        if name == ":authority":
            return request.authority
        if name == ":scheme":
            return request.scheme
        return None
    if name == "host":
        return request.authority
    return request.headers.get(name)


def header_values(request: RequestInfo, name: str) -> tuple[str, ...] | None:
    """The separate values of a header an HTTP request sent more than once.

    None when the header was sent at most once, and always for gRPC (gRFC
    A28 matches the joined value); :func:`header_value` then has the value.
    """
    lists = repeated_headers(request)
    return None if lists is None else lists.get(name)


def repeated_headers(request: RequestInfo) -> Mapping[str, tuple[str, ...]] | None:
    """The headers an HTTP request sent more than once, each with its values
    in order, when its headers mapping keeps them (:class:`HeaderLists`);
    None for gRPC and for mappings that do not."""
    if request.is_grpc:
        return None
    repeated = getattr(request.headers, "repeated", None)
    return None if repeated is None else repeated()


def parse_query(query: str) -> dict[str, str]:
    """Parse a raw query string into ``{name: first value}``.

    Follows Envoy's router (``parseQueryString``): parameters split on
    ``&``, ``name=value`` or a bare ``name`` (value ""), the first occurrence
    of a name wins, and nothing is percent-decoded.
    """
    out: dict[str, str] = {}
    if not query:
        return out
    for part in query.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if name not in out:
            out[name] = value if sep else ""
    return out
