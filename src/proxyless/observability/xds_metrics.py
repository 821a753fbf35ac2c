"""The xDS client's metrics (gRFC A78, "XdsClient"), through the
OpenTelemetry API.

- ``grpc.xds_client.connected`` (observable gauge, ``{bool}``;
  ``grpc.target``, ``grpc.xds.server``): 1 from the moment a stream to the
  server is created; 0 once a stream fails without having received a
  response, or the channel cannot be made (gRFC A57's connectivity
  failure); 1 again with the first response on a later stream.
- ``grpc.xds_client.server_failure`` (counter, ``{failure}``; same
  attributes): a server going from working to failing as just defined —
  one count per outage, not per reconnect attempt.
- ``grpc.xds_client.resource_updates_valid`` and ``_invalid`` (counters,
  ``{resource}``; ``grpc.target``, ``grpc.xds.server``,
  ``grpc.xds.resource_type``): per resource in each response, unchanged
  and unsubscribed resources included (A78 counts resources received, not
  responses). Invalid: undecodable, of the wrong type, failing validation,
  or named twice in one response — each NACKed.
- ``grpc.xds_client.resources`` (observable gauge, ``{resource}``;
  ``grpc.target``, ``grpc.xds.authority``, ``grpc.xds.cache_state``,
  ``grpc.xds.resource_type``): subscribed resources by cache state
  (``requested``, ``does_not_exist``, ``acked``, ``nacked``,
  ``nacked_but_cached``), read from the same per-resource status CSDS
  reports (:meth:`proxyless.xds_client.XdsClient.dump`).

Choices where A78 is silent or does not fit:

- ``grpc.target`` is the node id of the client's bootstrap, not a channel
  target: A78 has one xDS client per channel target, proxyless one per Mesh
  serving every channel and transport of it. A separate SDS server's client
  (:mod:`proxyless.security.sds`) reports under the same node id, with its
  own ``grpc.xds.server``.
- ``grpc.xds.resource_type`` is the type URL without its
  ``type.googleapis.com/`` prefix (``envoy.config.listener.v3.Listener``);
  ``grpc.xds.authority`` is the authority of an ``xdstp://`` name and
  ``#old`` for every other name.
- Gauges are read when the meter provider collects, on the client's loop
  (at most one second per client; a client that does not answer is left out
  of that collection). Closed clients report nothing. When clients sharing
  a node id report the same server, the gauge reports the lowest value
  (connected only if every stream to it works); resource counts add up.

The client calls :func:`track` / :func:`untrack` when it is made and
closed, :func:`server_failure` and :func:`resource_updates` where the
events happen; each returns at once without a meter provider.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from proxyless.observability import instruments

__all__ = [
    "CACHE_STATES",
    "CONNECTED",
    "OLD_AUTHORITY",
    "RESOURCES",
    "StatusView",
    "authority_of",
    "cache_state",
    "connected_by_server",
    "resource_counts",
    "resource_type_name",
    "resource_updates",
    "server_failure",
    "track",
    "untrack",
]

CONNECTED = "grpc.xds_client.connected"
RESOURCES = "grpc.xds_client.resources"
#: A78's authority of names that are not ``xdstp://`` names.
OLD_AUTHORITY = "#old"
CACHE_STATES = ("requested", "does_not_exist", "acked", "nacked", "nacked_but_cached")
#: Seconds a collection waits for one client's loop.
READ_TIMEOUT = 1.0

_TYPE_PREFIX = "type.googleapis.com/"


class StatusView(Protocol):
    """The fields of a resource status (:class:`proxyless.xds_client.ResourceStatus`)
    the resources gauge reads."""

    @property
    def type_url(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> Any: ...  # ClientStatus: its ``value`` is the CSDS name
    @property
    def cached(self) -> bool: ...


# -- pure helpers ---------------------------------------------------------------------


def resource_type_name(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.listener.v3.Listener`` ->
    ``envoy.config.listener.v3.Listener``."""
    return type_url[len(_TYPE_PREFIX) :] if type_url.startswith(_TYPE_PREFIX) else type_url


def authority_of(name: str) -> str:
    """The authority of an ``xdstp://`` resource name; ``#old`` otherwise (A78)."""
    if name.startswith("xdstp://"):
        return name[len("xdstp://") :].split("/", 1)[0]
    return OLD_AUTHORITY


def cache_state(status: str, cached: bool) -> str:
    """A78's ``grpc.xds.cache_state`` for a CSDS status (``REQUESTED``,
    ``DOES_NOT_EXIST``, ``ACKED``, ``NACKED``) and whether a good value is cached."""
    if status == "NACKED":
        return "nacked_but_cached" if cached else "nacked"
    if status == "ACKED":
        return "acked"
    if status == "DOES_NOT_EXIST":
        return "does_not_exist"
    if status == "REQUESTED":
        return "requested"
    raise ValueError(f"cache_state: unknown client status {status!r}")


def resource_counts(
    target: str, statuses: Iterable[StatusView]
) -> dict[tuple[str, str, str, str], int]:
    """Resources per ``(target, authority, cache state, resource type)``."""
    out: dict[tuple[str, str, str, str], int] = {}
    for s in statuses:
        key = (
            target,
            authority_of(s.name),
            cache_state(s.status.value, s.cached),
            resource_type_name(s.type_url),
        )
        out[key] = out.get(key, 0) + 1
    return out


def connected_by_server(
    target: str, servers: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str], int]:
    """1 or 0 per ``(target, server URI)`` from the client's server summaries
    (``server_uri``, ``last_error``): working until a failure is recorded."""
    return {(target, s["server_uri"]): int(s["last_error"] is None) for s in servers}


# -- counters (called by the xDS client where the event happens) ----------------------


def server_failure(target: str, server: str) -> None:
    """The xDS server ``server`` went from working to failing."""
    inst = instruments.get()
    if inst is None:
        return
    inst.xds_server_failure.add(1, {"grpc.target": target, "grpc.xds.server": server})


def resource_updates(target: str, server: str, response: Any, decoded: Any) -> None:
    """A ``DiscoveryResponse`` from ``server`` and its decoding
    (:class:`~proxyless.xds_client.protocol.DecodedResponse`): every decoded
    resource without errors counts as valid, every other resource of the
    response as invalid."""
    inst = instruments.get()
    if inst is None:
        return
    valid = sum(1 for r in decoded.results.values() if r.ok)
    invalid = len(response.resources) - valid
    attrs = {
        "grpc.target": target,
        "grpc.xds.server": server,
        "grpc.xds.resource_type": resource_type_name(response.type_url),
    }
    if valid:
        inst.xds_updates_valid.add(valid, attrs)
    if invalid > 0:
        inst.xds_updates_invalid.add(invalid, attrs)


# -- gauges (read the live clients when the meter provider collects) ------------------

_clients: weakref.WeakSet[Any] = weakref.WeakSet()
_clients_lock = threading.Lock()
_READ_ERRORS = (RuntimeError, TimeoutError, concurrent.futures.TimeoutError)


def track(client: Any) -> None:
    """Report ``client`` (an :class:`~proxyless.xds_client.XdsClient`) in the
    gauges until :func:`untrack` or garbage collection."""
    with _clients_lock:
        _clients.add(client)
    instruments.get()  # make the gauges now if a meter provider is in force


def untrack(client: Any) -> None:
    with _clients_lock:
        _clients.discard(client)


def _live() -> list[Any]:
    with _clients_lock:
        return list(_clients)


def _observe_connected(options: CallbackOptions) -> Iterable[Observation]:
    values: dict[tuple[str, str], int] = {}
    for client in _live():
        try:
            summaries = client.server_states(timeout=READ_TIMEOUT)
        except _READ_ERRORS:
            continue
        for key, value in connected_by_server(client.bootstrap.node.id, summaries).items():
            values[key] = min(value, values.get(key, value))
    return [
        Observation(v, {"grpc.target": target, "grpc.xds.server": server})
        for (target, server), v in sorted(values.items())
    ]


def _observe_resources(options: CallbackOptions) -> Iterable[Observation]:
    counts: dict[tuple[str, str, str, str], int] = {}
    for client in _live():
        try:
            statuses = client.dump(timeout=READ_TIMEOUT)
        except _READ_ERRORS:
            continue
        for key, n in resource_counts(client.bootstrap.node.id, statuses).items():
            counts[key] = counts.get(key, 0) + n
    return [
        Observation(
            n,
            {
                "grpc.target": target,
                "grpc.xds.authority": authority,
                "grpc.xds.cache_state": state,
                "grpc.xds.resource_type": rtype,
            },
        )
        for (target, authority, state, rtype), n in sorted(counts.items())
    ]


instruments.gauge(
    CONNECTED,
    "{bool}",
    "Whether the xDS client has a working ADS stream to the xDS server.",
    _observe_connected,
)
instruments.gauge(RESOURCES, "{resource}", "Number of xDS resources.", _observe_resources)
