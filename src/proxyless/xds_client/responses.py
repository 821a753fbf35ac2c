"""Applying a response to the cache: State of the World and delta xDS.

Both variants of ADS are described in Envoy's xDS protocol document
(api-docs/xds_protocol.rst). What differs is what a response means:

- **State of the World** (``DiscoveryResponse``): the response lists every
  subscribed resource the server has of the type, under one
  ``version_info``. For Listener and Cluster ("all resources required in
  SotW", gRFC A27) a cached resource missing from the response was deleted.
- **Delta** (``DeltaDiscoveryResponse``): the response lists only resources
  that changed, each with its own ``version``, and names the removed ones in
  ``removed_resources``, for every type. A name removed before it was ever
  received does not exist (the embedded control plane answers a
  subscription to a missing name that way). A resource wrapper without a
  body (Envoy's TTL heartbeat) changes nothing.

In both, valid resources are used even when siblings are invalid, and an
invalid one keeps its last good value (gRFC A46); deletions are applied only
from the server the authority uses now (gRFC A71), and
``ignore_resource_deletion`` keeps a cached resource the server drops
(gRFC A53). Each function returns the decoded response; its ``errors``, if
any, make the NACK.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from proxyless.xds_client.events import ResourceEvents
from proxyless.xds_client.protocol import DecodedResponse, decode_delta_response, decode_response
from proxyless.xds_client.state import ServerState, TypeState

__all__ = ["apply_delta", "apply_sotw"]


def _apply_decoded(
    ss: ServerState,
    ts: TypeState,
    decoded: DecodedResponse,
    events: ResourceEvents,
    version_of: dict[str, str] | str,
    now: float,
) -> None:
    for name, result in decoded.results.items():
        res = ts.resources.get(name)
        if res is None:
            continue  # not subscribed: extra resources are ignored (A27)
        events.cancel_timer(res)
        version = version_of if isinstance(version_of, str) else version_of.get(name, "")
        if result.errors:
            events.nack(res, "; ".join(result.errors), version, now)
        else:
            events.update(res, result.value, decoded.raws[name], version, now, ss)


def apply_sotw(
    ss: ServerState,
    ts: TypeState,
    resp: discovery_pb2.DiscoveryResponse,
    events: ResourceEvents,
    now: float,
) -> DecodedResponse:
    decoded = decode_response(ts, resp)
    _apply_decoded(ss, ts, decoded, events, resp.version_info, now)
    if ts.rtype.all_required_in_sotw:
        for name, res in list(ts.resources.items()):
            if name in decoded.results or not res.cached or not res.authority.uses_now(ss):
                continue
            events.deletion(ss, res, resp.version_info, now)
    return decoded


def apply_delta(
    ss: ServerState,
    ts: TypeState,
    resp: discovery_pb2.DeltaDiscoveryResponse,
    events: ResourceEvents,
    now: float,
) -> DecodedResponse:
    decoded = decode_delta_response(ts, resp)
    _apply_decoded(ss, ts, decoded, events, decoded.versions, now)
    for name in decoded.removed:
        res = ts.resources.get(name)
        if res is None or name in decoded.results or not res.authority.uses_now(ss):
            continue
        events.cancel_timer(res)
        events.deletion(ss, res, resp.system_version_info, now)
    return decoded
