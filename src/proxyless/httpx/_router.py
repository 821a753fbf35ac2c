"""What Envoy's router does to an HTTP request and response, as pure functions.

Everything here follows Envoy's router (``route_components.proto`` and the
router's documented behaviour, ``source/common/router/config_impl.cc``,
``header_parser.cc``) so a backend receives through :mod:`proxyless.httpx`
what it receives through an Envoy sidecar with the same config:

- **Header mutations** (:func:`evaluate_headers`): per level, the names in
  ``*_headers_to_remove`` are removed first; then every entry of
  ``*_headers_to_add`` is decided against the headers as they are after the
  removal — ``append_if_exists_or_add`` adds one more value,
  ``add_if_absent`` adds only when the header is absent,
  ``overwrite_if_exists_or_add`` replaces every value,
  ``overwrite_if_exists`` replaces only a present header; an empty value is
  skipped unless ``keep_empty_value``. Overwrites are applied before
  appends. Request levels run weighted cluster, route, virtual host, route
  configuration (so with appends the least specific value comes last and
  with overwrites the route configuration wins, Envoy's default
  ``most_specific_header_mutations_wins: false``); responses the same.
  Values are literal: Envoy's ``%COMMAND%`` substitutions are not expanded.
- **Host**: the weighted cluster's ``host_rewrite_literal``, then the
  route's; ``auto_host_rewrite`` uses the chosen endpoint's EDS
  ``hostname`` when it has one (:func:`auto_host`). A route-level rewrite
  (literal or auto) keeps the previous Host in ``x-envoy-original-host``,
  as Envoy does; a weighted cluster's rewrite does not.
- **Path** (:func:`rewrite_path`): ``prefix_rewrite`` replaces the part
  the route matched (the prefix, or the whole path for ``path`` and
  ``safe_regex`` matches); ``regex_rewrite`` substitutes every match in
  the path. The query string is kept. A rewritten request carries
  ``x-envoy-original-path`` with the original path and query, as Envoy
  adds it by default.
- **Redirects** (:func:`redirect_location`): Envoy's ``newUri``: scheme
  from ``scheme_redirect`` / ``https_redirect`` or the request's; host from
  ``host_redirect`` (which drops the request's port) or the request's
  host, whose port is dropped when ``port_redirect`` is set or when the
  scheme changes away from its default port; ``path_redirect`` keeps the
  request's query unless it has its own; ``prefix_rewrite`` /
  ``regex_rewrite`` rewrite the request path first; ``strip_query``.
- **Mirrors**: the shadow request's authority gets ``-shadow`` appended
  to the host part (``reviews:9080`` -> ``reviews-shadow:9080``).

Header names are handled lower case, as Envoy forwards them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from proxyless.resources.model import (
    DirectResponseAction,
    HeaderValueOption,
    MirrorPolicy,
    RedirectAction,
    Route,
    RouteAction,
    RouteConfiguration,
)
from proxyless.routing import RouteResult

__all__ = [
    "ORIGINAL_HOST_HEADER",
    "ORIGINAL_PATH_HEADER",
    "HeaderLevel",
    "LazyHeaders",
    "RoutePlan",
    "auto_host",
    "direct_response_headers",
    "evaluate_headers",
    "plan_for",
    "redirect_location",
    "rewrite_path",
    "shadow_host",
    "split_host_port",
]

#: Envoy's header carrying the path (with query) before a rewrite.
ORIGINAL_PATH_HEADER: Final = "x-envoy-original-path"
#: Envoy's header carrying the Host before a route-level host rewrite.
ORIGINAL_HOST_HEADER: Final = "x-envoy-original-host"

Headers = list[tuple[str, str]]


def _wire(value: str) -> str:
    """A config value as it goes on the wire: UTF-8 bytes kept in a latin-1 str."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


@dataclass(frozen=True, slots=True)
class HeaderLevel:
    """The mutations of one config level (route, virtual host ...)."""

    to_add: tuple[HeaderValueOption, ...]
    to_remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.to_add and not self.to_remove


def evaluate_headers(headers: Headers, level: HeaderLevel) -> Headers:
    """Apply one level of mutations to ``headers`` (lower-case names); returns
    the new list (Envoy ``HeaderParser::evaluateHeaders``)."""
    if level.to_remove:
        gone = {name.lower() for name in level.to_remove}
        headers = [(k, v) for k, v in headers if k not in gone]
    if not level.to_add:
        return headers
    present = {k for k, _ in headers}
    appends: Headers = []
    overwrites: Headers = []
    for option in level.to_add:
        if not option.value and not option.keep_empty_value:
            continue
        key = option.key.lower()
        value = _wire(option.value)
        action = option.append_action
        if action == "append_if_exists_or_add":
            appends.append((key, value))
        elif action == "add_if_absent":
            if key not in present:
                appends.append((key, value))
        elif action == "overwrite_if_exists":
            if key in present:
                overwrites.append((key, value))
        else:  # overwrite_if_exists_or_add
            overwrites.append((key, value))
    if overwrites:
        replaced = {k for k, _ in overwrites}
        headers = [(k, v) for k, v in headers if k not in replaced]
        headers.extend(overwrites)
    elif appends:
        headers = list(headers)
    headers.extend(appends)
    return headers


def split_host_port(authority: str) -> tuple[str, str]:
    """``("reviews", ":9080")`` from ``reviews:9080``; IPv6 literals keep their brackets."""
    if authority.startswith("["):
        end = authority.rfind("]:")
        if end != -1:
            return authority[: end + 1], authority[end + 1 :]
        return authority, ""
    colon = authority.rfind(":")
    if colon == -1:
        return authority, ""
    return authority[:colon], authority[colon:]


def shadow_host(authority: str) -> str:
    """The authority of a mirrored request: ``-shadow`` after the host part."""
    host, port = split_host_port(authority)
    return f"{host}-shadow{port}"


def _matched_length(route: Route, path: str) -> int:
    match = route.match
    if match.path_kind in ("prefix", "path_separated_prefix"):
        return len(match.path)
    return len(path)  # path and safe_regex matches: the whole path


def rewrite_path(route: Route, action: RouteAction | RedirectAction, raw_path: str) -> str | None:
    """The path (with query) after ``prefix_rewrite`` / ``regex_rewrite``; None when
    the route rewrites nothing."""
    prefix = action.prefix_rewrite
    regex = action.regex_rewrite
    if prefix is None and regex is None:
        return None
    path, sep, query = raw_path.partition("?")
    if regex is not None:
        new = regex.apply(path)
    else:
        assert prefix is not None
        new = prefix + path[_matched_length(route, path) :]
    return f"{new}{sep}{query}"


def auto_host(hostname: str, current: str) -> str:
    """``auto_host_rewrite``: the endpoint's EDS hostname when it has one."""
    return hostname or current


_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}


def redirect_location(
    action: RedirectAction, route: Route, scheme: str, authority: str, raw_path: str
) -> str:
    """The ``location`` of a redirect route's answer (Envoy ``newUri``)."""
    if action.scheme:
        new_scheme = action.scheme
    else:
        new_scheme = scheme
    new_port = f":{action.port}" if action.port else ""
    if action.host:
        new_host = action.host
    else:
        host, port = split_host_port(authority)
        remove = bool(new_port)
        if port and new_scheme != scheme:
            remove = remove or _DEFAULT_PORTS.get(scheme) == port
        new_host = host if (port and remove) else authority
    rewritten = rewrite_path(route, action, raw_path)
    current = rewritten if rewritten is not None else raw_path
    if action.path is not None:
        if "?" in action.path:
            path = action.path
        else:
            _, sep, query = current.partition("?")
            path = f"{action.path}{sep}{query}"
    else:
        path = current
    if not path.startswith("/"):
        path = "/" + path
    if action.strip_query:
        path = path.partition("?")[0]
    return f"{new_scheme}://{new_host}{new_port}{path}"


def direct_response_headers(action: DirectResponseAction) -> Headers:
    """Envoy's local reply headers for a direct response."""
    headers: Headers = [("content-length", str(len(action.body)))]
    if action.body:
        headers.append(("content-type", "text/plain"))
    return headers


class RoutePlan:
    """What a route asks of the request and response, compiled once per
    :class:`~proxyless.routing.RouteResult` (cached by identity)."""

    __slots__ = (
        "auto_host_rewrite",
        "host_rewrite",
        "mirrors",
        "request_levels",
        "response_levels",
        "result",
        "rewrites_path",
        "weighted_host_rewrite",
    )

    def __init__(self, result: RouteResult, route_config: RouteConfiguration) -> None:
        self.result = result
        route, vhost, weight = result.route, result.virtual_host, result.cluster_weight
        levels = []
        if weight is not None:
            levels.append(
                HeaderLevel(weight.request_headers_to_add, weight.request_headers_to_remove)
            )
        levels.append(HeaderLevel(route.request_headers_to_add, route.request_headers_to_remove))
        levels.append(HeaderLevel(vhost.request_headers_to_add, vhost.request_headers_to_remove))
        levels.append(
            HeaderLevel(route_config.request_headers_to_add, route_config.request_headers_to_remove)
        )
        self.request_levels = tuple(lv for lv in levels if not lv.empty)
        rlevels = []
        if weight is not None:
            rlevels.append(
                HeaderLevel(weight.response_headers_to_add, weight.response_headers_to_remove)
            )
        rlevels.append(HeaderLevel(route.response_headers_to_add, route.response_headers_to_remove))
        rlevels.append(HeaderLevel(vhost.response_headers_to_add, vhost.response_headers_to_remove))
        rlevels.append(
            HeaderLevel(
                route_config.response_headers_to_add, route_config.response_headers_to_remove
            )
        )
        self.response_levels = tuple(lv for lv in rlevels if not lv.empty)
        action = result.route_action
        self.weighted_host_rewrite: str | None = (
            weight.host_rewrite_literal
            if weight is not None and weight.host_rewrite_literal
            else None
        )
        self.host_rewrite: str | None = (
            action.host_rewrite_literal
            if action is not None and action.host_rewrite_literal
            else None
        )
        self.auto_host_rewrite = action is not None and action.auto_host_rewrite
        self.rewrites_path = action is not None and (
            action.prefix_rewrite is not None or action.regex_rewrite is not None
        )
        self.mirrors: tuple[MirrorPolicy, ...] = (
            action.request_mirror_policies if action is not None else ()
        )

    @property
    def changes_request(self) -> bool:
        return (
            bool(self.request_levels)
            or self.host_rewrite is not None
            or self.weighted_host_rewrite is not None
            or self.rewrites_path
        )

    def request_headers(self, headers: Headers) -> Headers:
        for level in self.request_levels:
            headers = evaluate_headers(headers, level)
        return headers

    def response_headers(self, headers: Headers) -> Headers:
        for level in self.response_levels:
            headers = evaluate_headers(headers, level)
        return headers


_plans: dict[int, RoutePlan] = {}
_plans_lock = threading.Lock()
_PLAN_LIMIT: Final = 4096


def plan_for(result: RouteResult, route_config: RouteConfiguration) -> RoutePlan:
    """The :class:`RoutePlan` of ``result`` (cached; results are memoized by routing)."""
    plan = _plans.get(id(result))
    if plan is not None and plan.result is result:
        return plan
    plan = RoutePlan(result, route_config)
    with _plans_lock:
        if len(_plans) >= _PLAN_LIMIT:
            _plans.clear()
        _plans[id(result)] = plan
    return plan


class LazyHeaders(Mapping[str, str]):
    """Request headers as routing sees them, built on first use: lower-case
    names, repeated values joined with ``","``, ``host`` left out (Envoy sees
    it as ``:authority``). A :class:`~proxyless.routing.HeaderLists`:
    :meth:`repeated` has the separate values of the names sent more than
    once."""

    __slots__ = ("_built", "_lists", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._built: dict[str, str] | None = None
        self._lists: dict[str, tuple[str, ...]] | None = None

    def _build(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self._raw:
            k = key.decode("latin-1").lower()
            if k == "host":
                continue
            v = value.decode("latin-1")
            prev = out.get(k)
            if prev is None:
                out[k] = v
            else:
                out[k] = f"{prev},{v}"
                if self._lists is None:
                    self._lists = {}
                self._lists[k] = (*self._lists.get(k, (prev,)), v)
        self._built = out
        return out

    def repeated(self) -> dict[str, tuple[str, ...]] | None:
        """The names sent more than once, with their values in order (None
        when no name was)."""
        if self._built is None:
            self._build()
        return self._lists

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        built = self._built if self._built is not None else self._build()
        return built.get(key, default)

    def __getitem__(self, key: str) -> str:
        built = self._built if self._built is not None else self._build()
        return built[key]

    def __iter__(self) -> Iterator[str]:
        built = self._built if self._built is not None else self._build()
        return iter(built)

    def __len__(self) -> int:
        built = self._built if self._built is not None else self._build()
        return len(built)

    def __contains__(self, key: object) -> bool:
        built = self._built if self._built is not None else self._build()
        return key in built
