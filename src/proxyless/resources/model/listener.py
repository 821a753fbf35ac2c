"""Listener model (LDS) for clients: the ``api_listener``'s HttpConnectionManager.

Implements what gRFC A27/A28/A39 read from an ``envoy.config.listener.v3.Listener``
whose ``api_listener`` holds an
``envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager``:
the route configuration (by RDS name or inline), the HTTP filter chain
(router last; unknown optional filters dropped) and the HCM-level
``common_http_protocol_options.max_stream_duration`` (gRFC A31).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyless.resources.model.filters import FilterConfig
from proxyless.resources.model.route import RouteConfiguration

__all__ = ["HttpFilter", "Listener"]


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One entry of ``HttpConnectionManager.http_filters`` that proxyless supports.

    ``type_url`` is the type URL of the filter's typed config (the inner
    type when wrapped in ``xds.type.v3.TypedStruct`` is not supported).
    ``config`` is never a :class:`DisabledFilterConfig` here.
    """

    name: str
    type_url: str
    config: FilterConfig | None
    is_optional: bool = False


@dataclass(frozen=True, slots=True)
class Listener:
    """``envoy.config.listener.v3.Listener`` with an ``api_listener``.

    Exactly one of ``route_config_name`` (RDS) and ``route_config`` (inline)
    is set. ``http_filters`` ends with the router and omits unknown
    optional filters. ``max_stream_duration`` is float seconds or None
    (unset). ``ignored_fields`` lists set-but-unused field paths.
    """

    name: str
    route_config_name: str | None
    route_config: RouteConfiguration | None
    http_filters: tuple[HttpFilter, ...]
    max_stream_duration: float | None = None
    ignored_fields: tuple[str, ...] = ()
