"""Random RouteConfigurations and requests for the differential routing test.

``tests/interop/test_routing_diff.py`` sends every request drawn here through
a real Envoy and through :class:`proxyless.httpx.Transport`, both fed the
same RouteConfiguration, and compares the answers. Every route here is a
``direct_response`` whose body names the route (``vh2/r3``), so both sides
answer locally and no upstream is involved; a request no route takes is
Envoy's 404 (flag ``NR``) and proxyless' ``MeshConnectError`` at the
``routing`` stage.

Everything is drawn from one ``random.Random``: :func:`draw_case` gives the
same configuration and requests for the same seed on every machine, so a
failure is replayed by its seed alone.

What the configurations hold (Envoy's ``route_components.proto``):

- virtual hosts with exact domains (some with a port, IPv6 literals, a
  trailing dot), suffix and prefix wildcards (some with a port), a ``*`` in
  the middle (a literal to Envoy), upper-case domains, and at most one ``*``; domains are unique across the
  configuration (Envoy NACKs a repeated domain);
- routes matching by ``prefix`` (the empty prefix too), ``path``,
  ``safe_regex`` and ``path_separated_prefix``, with ``case_sensitive``
  unset, true or false;
- header matchers of every kind (``exact_match`` and the other deprecated
  fields, ``string_match`` with ``ignore_case``, ``safe_regex``,
  ``present_match`` true and false, ``range_match``), with ``invert_match``
  and ``treat_missing_header_as_empty``, on plain headers, ``:method``,
  ``:authority``, ``:path``, ``:scheme`` and ``host``;
- query parameter matchers (``string_match`` of every kind,
  ``present_match``);
- ``runtime_fraction`` of 0 % or 100 % only, so the answer is deterministic.

Left out on purpose, each because the two sides cannot be compared on it,
not because they differ:

- the ``grpc`` route match and ``application/grpc`` requests: Envoy turns a
  local reply to a gRPC request into a gRPC status, and the httpx transport
  routes every request as HTTP;
- headers Envoy's connection manager rewrites before routing
  (``x-forwarded-proto``, ``x-request-id``, ``connection``, ``te``,
  ``x-envoy-*``), and ``content-length`` (httpx sets it for some methods);
- configurations both sides NACK (a ``safe_regex`` string matcher with
  ``ignore_case``, empty ``prefix``/``suffix``/``contains`` string
  matchers): they route nothing; and an empty ``safe_regex`` regex, which
  Envoy NACKs and proxyless accepts (a validation difference, in
  docs/httpx.md);

``HEAD`` requests, URLs ending in a bare ``?`` and query matchers with
``present_match: false`` are drawn too: they were differences once
(docs/httpx.md) and are fixed. A ``HEAD`` answer carries no body on either
side, so it is compared by status only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2, range_pb2
from google.protobuf import text_format

__all__ = [
    "READY_HOST",
    "DiffCase",
    "DiffRequest",
    "describe_config",
    "draw_case",
    "ready_vhost",
]

#: A domain no drawn request uses: its virtual host answers which configuration is live.
READY_HOST = "ready.probe"

_NAMES = ("svc", "svc.local", "api.example.com", "www.example.com", "a-b.example.com")
_MORE_NAMES = ("example.com", "api.other.org", "b.c.d", "shop", "api-v2.internal")
_PORTS = ("", "", ":80", ":8080", ":9000")
_SEGMENTS = (
    *("api", "v1", "v2", "users", "Users", "items", "a", "b", "x.y", "z-1", "API", ""),
    *("%2F", "%41", "a;b", "~u"),
)
_METHODS = ("GET", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_STATUSES = (200, 200, 201, 202, 403, 418, 503)
_HEADER_NAMES = ("x-a", "x-b", "x-role", "x-num", "X-Role", "user-agent")
_PSEUDO = (":method", ":authority", "host", ":path", ":scheme")
_VALUES = ("admin", "user", "Admin", "user,admin", "guest", "12", "-3", "0", "+7", "100", "abc", "")
_QUERY_NAMES = ("q", "id", "debug", "Q")
_QUERY_VALUES = ("a", "b", "A", "abc", "12", "a%20b", "a+b", "x,y", "b?c", "")
_REGEX_PATHS = (
    "/api/v[0-9]+/.*",
    "/(users|items)/[a-z]+",
    ".*\\.y",
    "/[A-Z].*",
    "/api/.*",
    "/[^/]+",
    "/a(/b)?",
    "/.*/z-1",
)
_REGEX_VALUES = ("ad.*", "[0-9]+", "(user|admin)", ".*,.*", "[A-Z][a-z]+", "-?[0-9]")


@dataclass(frozen=True)
class DiffRequest:
    """One request: the ``Host`` header, the raw path (query included) and
    the other headers in the order sent (a name may repeat)."""

    method: str
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.method} {self.path}", f"host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return "\n    ".join(lines)


@dataclass(frozen=True)
class DiffCase:
    """A configuration and the requests drawn for it."""

    seed: int
    route_config: route_pb2.RouteConfiguration
    requests: tuple[DiffRequest, ...]


def describe_config(rc: route_pb2.RouteConfiguration) -> str:
    """The configuration in protobuf text format (what a failure prints)."""
    return text_format.MessageToString(rc)


def ready_vhost(generation: int) -> rc_pb2.VirtualHost:
    """The virtual host answering ``config-<generation>`` for :data:`READY_HOST`."""
    vhost = rc_pb2.VirtualHost(name="ready", domains=[READY_HOST])
    route = vhost.routes.add()
    route.match.prefix = "/"
    route.direct_response.status = 200
    route.direct_response.body.inline_string = f"config-{generation}"
    return vhost


# -- configurations -------------------------------------------------------------------------


def _path(rng: random.Random) -> str:
    segments = [rng.choice(_SEGMENTS) for _ in range(rng.randint(1, 4))]
    path = "/" + "/".join(segments)
    return path.replace("//", "/")


def _domains(rng: random.Random, used: set[str], allow_star: bool) -> list[str]:
    out: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        name = rng.choice(_NAMES + _MORE_NAMES)
        port = rng.choice(_PORTS)
        if allow_star and kind < 0.08:
            domain = "*"
        elif kind < 0.5:
            domain = name + port
        elif kind < 0.7:
            # suffix wildcard: "*" then the end of a name ("*.example.com", "*-b.example.com")
            cut = rng.randint(1, max(1, len(name) - 1))
            domain = "*" + name[cut:] + port
        elif kind < 0.85:
            # prefix wildcard: the start of a name then "*" ("api.*", "svc:*")
            cut = rng.randint(1, len(name))
            domain = (name + port)[:cut] + "*"
        elif kind < 0.93:
            # a '*' neither first nor last is a literal character to Envoy;
            # '*:8080' is a suffix wildcard on the port
            domain = rng.choice(("svc.*:9000", "a-*:80", "api.*.com", "x*y", "*:8080"))
        elif kind < 0.95:
            domain = rng.choice(("[::1]:8080", "[::1]", "svc.", "*.Mixed.Example"))
        else:
            domain = (name + port).upper()
        if domain.lower() not in used and domain.lower() != READY_HOST:
            used.add(domain.lower())
            out.append(domain)
    return out


def _string_matcher(
    rng: random.Random, values: Sequence[str], *, regexes: Sequence[str]
) -> string_pb2.StringMatcher:
    kind = rng.choice(("exact", "prefix", "suffix", "contains", "safe_regex"))
    m = string_pb2.StringMatcher()
    if kind == "safe_regex":
        m.safe_regex.regex = rng.choice(regexes)
        return m
    value = rng.choice(values)
    if kind != "exact":
        # Envoy's proto validation wants at least one character here.
        value = value[: rng.randint(1, len(value))] if value else "a"
        if kind == "suffix":
            value = rng.choice(values)[-len(value) :] or value
    setattr(m, kind, value)
    m.ignore_case = rng.random() < 0.3
    return m


def _values_for(name: str) -> Sequence[str]:
    if name == ":method":
        return _METHODS
    if name in (":authority", "host"):
        return tuple(n + p for n in _NAMES for p in _PORTS[1:3])
    if name == ":path":
        return ("/api", "/api/v1", "/users", "/a/b", "?q=a", "v1/")
    if name == ":scheme":
        return ("http", "https")
    return _VALUES


def _header_matcher(rng: random.Random) -> rc_pb2.HeaderMatcher:
    name = rng.choice(_HEADER_NAMES) if rng.random() < 0.7 else rng.choice(_PSEUDO)
    values = _values_for(name)
    m = rc_pb2.HeaderMatcher(name=name)
    kind = rng.random()
    if kind < 0.15:
        m.exact_match = rng.choice(values)
    elif kind < 0.5:
        regexes = _REGEX_VALUES if name not in (":path",) else _REGEX_PATHS
        m.string_match.CopyFrom(_string_matcher(rng, values, regexes=regexes))
    elif kind < 0.6:
        m.prefix_match = rng.choice([v for v in values if v])[:2]
    elif kind < 0.65:
        m.suffix_match = rng.choice([v for v in values if v])[-2:]
    elif kind < 0.7:
        m.contains_match = rng.choice([v for v in values if v])[1:3] or "a"
    elif kind < 0.75:
        m.safe_regex_match.regex = rng.choice(_REGEX_VALUES)
    elif kind < 0.88:
        m.present_match = rng.random() < 0.7
    else:
        start = rng.choice((-10, -3, 0, 5, 10, 50))
        m.range_match.CopyFrom(
            range_pb2.Int64Range(start=start, end=start + rng.choice((1, 5, 20, 100)))
        )
    m.invert_match = rng.random() < 0.25
    m.treat_missing_header_as_empty = rng.random() < 0.1
    return m


def _query_matcher(rng: random.Random) -> rc_pb2.QueryParameterMatcher:
    m = rc_pb2.QueryParameterMatcher(name=rng.choice(_QUERY_NAMES))
    if rng.random() < 0.25:
        m.present_match = rng.random() < 0.6
    else:
        m.string_match.CopyFrom(
            _string_matcher(rng, [v for v in _QUERY_VALUES if v], regexes=_REGEX_VALUES)
        )
    return m


def _route(rng: random.Random, label: str) -> rc_pb2.Route:
    r = rc_pb2.Route(name=label)
    kind = rng.random()
    path = _path(rng)
    if kind < 0.45:
        # a prefix of a path, cut anywhere (the empty prefix now and then)
        r.match.prefix = path[: rng.randint(0, len(path))] if rng.random() < 0.9 else ""
        if rng.random() < 0.05:
            # a '?' in a prefix: Envoy compares prefixes with the path only
            r.match.prefix = path + "?" + rng.choice(_QUERY_NAMES)
    elif kind < 0.65:
        r.match.path = path
    elif kind < 0.85:
        r.match.safe_regex.regex = rng.choice(_REGEX_PATHS)
    else:
        # Envoy: at least two characters, no '?' or '#', not ending with '/'
        trimmed = path.rstrip("/")
        r.match.path_separated_prefix = trimmed if len(trimmed) > 1 else "/a"
    sensitivity = rng.random()
    if sensitivity < 0.2:
        r.match.case_sensitive.value = True
    elif sensitivity < 0.45:
        r.match.case_sensitive.value = False
    if rng.random() < 0.4:
        r.match.headers.extend(_header_matcher(rng) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.25:
        r.match.query_parameters.extend(_query_matcher(rng) for _ in range(rng.randint(1, 2)))
    if rng.random() < 0.1:
        fraction = r.match.runtime_fraction
        fraction.default_value.numerator = rng.choice((0, 100))
        fraction.default_value.denominator = percent_pb2.FractionalPercent.HUNDRED
        fraction.runtime_key = f"routing_diff.{label.replace('/', '_')}"
    r.direct_response.status = rng.choice(_STATUSES)
    r.direct_response.body.inline_string = label
    return r


def _route_config(rng: random.Random, name: str) -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    used: set[str] = set()
    star = False
    for v in range(rng.randint(2, 5)):
        domains = _domains(rng, used, allow_star=not star)
        if not domains:
            continue
        star = star or "*" in domains
        vhost = rc.virtual_hosts.add(name=f"vh{v}", domains=domains)
        count = rng.randint(2, 7)
        vhost.routes.extend(_route(rng, f"vh{v}/r{i}") for i in range(count))
        if rng.random() < 0.3:
            # a catch-all last route, so the earlier routes' misses show too
            last = _route(rng, f"vh{v}/r{count}")
            last.match.Clear()
            last.match.prefix = "/"
            vhost.routes.append(last)
    return rc


# -- requests -------------------------------------------------------------------------------


def _host_for(rng: random.Random, domains: Sequence[str]) -> str:
    kind = rng.random()
    if kind < 0.8 and domains:
        domain = rng.choice(domains)
        if domain == "*":
            return rng.choice(_MORE_NAMES)
        if domain.startswith("*"):
            return rng.choice(("foo", "x", "a-b", "")) + domain[1:]
        if domain.endswith("*") and len(domain) > 1:
            return domain[:-1] + rng.choice(("x", ".com", ":8080", "", "1"))
        return domain if rng.random() < 0.8 else domain.swapcase()
    if kind < 0.9:
        return rng.choice(_NAMES + _MORE_NAMES) + rng.choice(_PORTS)
    return rng.choice(
        ("nomatch.test", "svc.*:9000", "a-*:80", "API.EXAMPLE.COM", "x*y", "[::1]:8080", "svc.")
    )


def _path_for(rng: random.Random, route: rc_pb2.Route | None) -> str:
    if route is None or rng.random() < 0.25:
        return _path(rng)
    match = route.match
    which = match.WhichOneof("path_specifier")
    if which == "prefix":
        path = match.prefix + rng.choice(("", "x", "/", "/users", "s/a"))
        path = path if path.startswith("/") else "/" + path
    elif which == "path":
        path = match.path
    elif which == "path_separated_prefix":
        path = match.path_separated_prefix + rng.choice(("", "/", "/x", "x", "/a/b"))
    else:
        path = rng.choice(("/api/v1/x", "/users/abc", "/x.y", "/Api", "/a", "/a/b", "/q/z-1"))
    if rng.random() < 0.2:
        path = path.swapcase()
    return path


def _query(rng: random.Random, route: rc_pb2.Route | None) -> str:
    names = list(_QUERY_NAMES)
    if route is not None:
        names += [q.name for q in route.match.query_parameters] * 3
    parts = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(names)
        if rng.random() < 0.15:
            parts.append(name)
        else:
            parts.append(f"{name}={rng.choice(_QUERY_VALUES)}")
    return "&".join(parts)


def _header_value(rng: random.Random, matcher: rc_pb2.HeaderMatcher) -> str:
    which = matcher.WhichOneof("header_match_specifier")
    values = _values_for(matcher.name)
    if which == "exact_match" and rng.random() < 0.75:
        return matcher.exact_match
    if which == "string_match" and rng.random() < 0.75:
        sm = matcher.string_match
        kind = sm.WhichOneof("match_pattern")
        if kind in ("exact", "prefix", "contains"):
            text = getattr(sm, kind) + ("" if kind == "exact" else rng.choice(("", "x")))
            return text.upper() if rng.random() < 0.3 else text
        if kind == "suffix":
            return rng.choice(("", "a")) + sm.suffix
    if which == "range_match" and rng.random() < 0.75:
        return str(rng.randint(matcher.range_match.start - 2, matcher.range_match.end + 2))
    return rng.choice(values)


def _headers(rng: random.Random, route: rc_pb2.Route | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    matchers = list(route.match.headers) if route is not None else []
    for matcher in matchers:
        name = matcher.name.lower()
        if name.startswith(":") or name in ("host", "user-agent") or rng.random() < 0.2:
            continue
        out.append((matcher.name, _header_value(rng, matcher)))
        if rng.random() < 0.25:
            # the same header again: Envoy matches each value on its own
            out.append((name, _header_value(rng, matcher)))
    for _ in range(rng.randint(0, 2)):
        name = rng.choice(_HEADER_NAMES[:5])
        out.append((name.upper() if rng.random() < 0.1 else name, rng.choice(_VALUES)))
    if rng.random() < 0.1:
        out.append(("user-agent", rng.choice(("curl/8", "admin-tool", "12"))))
    rng.shuffle(out)
    return out


def _request(rng: random.Random, rc: route_pb2.RouteConfiguration) -> DiffRequest:
    vhosts = list(rc.virtual_hosts)
    vhost = rng.choice(vhosts)
    route = rng.choice(list(vhost.routes)) if vhost.routes else None
    # mostly aim at the virtual host the route belongs to
    domains = vhost.domains if rng.random() < 0.75 else [d for v in vhosts for d in v.domains]
    host = _host_for(rng, domains)
    path = _path_for(rng, route)
    if rng.random() < 0.4 or (route is not None and route.match.query_parameters):
        path = f"{path}?{_query(rng, route)}"
    elif rng.random() < 0.1:
        path = f"{path}?"  # a bare "?": Envoy's :path keeps it
    method = rng.choice(_METHODS) if rng.random() < 0.95 else "HEAD"
    if route is not None and any(m.name == ":method" for m in route.match.headers):
        method = rng.choice(_METHODS[:4])
    return DiffRequest(method, host, path, tuple(_headers(rng, route)))


def draw_case(seed: int, requests: int, name: str) -> DiffCase:
    """The configuration ``name`` and ``requests`` requests drawn from ``seed``."""
    rng = random.Random(seed)
    rc = _route_config(rng, name)
    drawn = tuple(_request(rng, rc) for _ in range(requests))
    return DiffCase(seed, rc, drawn)
