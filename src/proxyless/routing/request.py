"""What the routing layer sees of a request, whatever the transport.

The gRPC adapter and the httpx transports both describe a request as a
:class:`RequestInfo`; every routing function (virtual host choice, route
match, cluster choice, hash computation) reads only this. Header names are
lower case and repeated values are already joined with ``","`` (gRFC A28).

:func:`header_value` applies the header visibility rules of gRFC A28 for
gRPC and of Envoy's router for HTTP:

- gRPC: only application metadata plus ``content-type`` (``application/grpc``
  when the transport has not added it); names ending in ``-bin`` are treated
  as absent; pseudo-headers (``:path`` ...) are never visible.
- HTTP: the headers as sent, plus the pseudo-headers ``:method``, ``:path``
  (with the query string, as Envoy's ``:path``), ``:authority`` and
  ``:scheme``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["RequestInfo", "header_value", "parse_query"]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return _NO_HEADERS


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One request as the routing layer sees it.

    ``authority`` is the target's authority (gRPC: the ``xds:///`` target's
    name, e.g. ``reviews:9080``; HTTP: the URL's host[:port]). ``path`` is
    ``/package.Service/Method`` for gRPC and the URL path without the query
    for HTTP; ``query`` is the raw query string without ``?`` ("" for none).
    ``headers`` holds lower-case names with repeated values joined by ``","``.
    ``source_ip`` is the local address of the connection, used only by the
    ``connection_properties`` hash policy. ``scheme`` feeds the HTTP
    ``:scheme`` pseudo-header.
    """

    authority: str
    path: str
    query: str = ""
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    is_grpc: bool = True
    source_ip: str = ""
    scheme: str = "http"

    @property
    def path_and_query(self) -> str:
        """The path with ``?query`` appended when there is one (Envoy's ``:path``)."""
        return f"{self.path}?{self.query}" if self.query else self.path


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
    return request.headers.get(name)


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
