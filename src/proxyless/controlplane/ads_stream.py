"""One ADS stream's side of the protocol: what it subscribed to, what it was sent.

Both variants of Envoy's xDS protocol document (api-docs/xds_protocol.rst),
tracked per stream and type:

* State of the World (``StreamAggregatedResources``). The stream tracks the
  subscribed names. A request whose names differ from the stream's current
  subscription (or the first request of a type) gets a reply with every
  subscribed resource that exists, ``version_info`` = the type's version and
  a fresh nonce. A request carrying the latest nonce and no name change is an
  ACK, or a NACK when it has ``error_detail``; neither gets a reply, and a
  NACKed response is not resent. A request with an older nonce is stale and
  ignored (the client repeats its subscription when it answers the newest
  response). Legacy wildcard: for Listener and Cluster, a first request
  without names subscribes to everything and later empty requests keep it;
  once names are sent only ``"*"`` among them means wildcard. After a change
  of the resources, Listener and Cluster are resent whenever the subscribed
  set differs from what was sent (a missing one means it was deleted); the
  other types only when a subscribed resource is new or changed.
* Delta (``DeltaAggregatedResources``, incremental xDS). Subscriptions change
  by ``resource_names_subscribe``/``_unsubscribe`` (``"*"`` is the wildcard;
  a first request without names for Listener/Cluster is the legacy wildcard);
  ``initial_resource_versions`` seeds what the client already has. Each
  resource carries its own version (a hash of its bytes); responses list
  changed resources and ``removed_resources``. A newly subscribed name that
  does not exist is reported in ``removed_resources`` so the client learns it
  at once. The first request of each type always gets a response.

:class:`AdsStream` applies requests and resource changes to that state and
builds the response to send, if any. It neither locks nor does I/O: the
server calls it under its lock, queues each :class:`Reply` on the stream and
records it.
"""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from proxyless.controlplane.model import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    WILDCARD_TYPES,
    NodeInfo,
    Resource,
    SentResponse,
)

__all__ = [
    "ALL_REQUIRED",
    "AdsStream",
    "DeltaState",
    "Encoded",
    "Reply",
    "SotwState",
    "View",
    "encode",
]

#: Types whose SotW responses must list every subscribed resource (a missing
#: one means it was deleted); for the others a response may be partial.
ALL_REQUIRED = frozenset({LISTENER_TYPE, CLUSTER_TYPE})


@dataclass(frozen=True, slots=True)
class Encoded:
    """A resource packed once for every stream, with its version (a hash of its bytes)."""

    packed: any_pb2.Any
    version: str


#: What one node sees: ``{type_url: {name: encoded resource}}``.
View = dict[str, dict[str, Encoded]]


def encode(type_url: str, resource: Resource) -> Encoded:
    if isinstance(resource, bytes):
        packed = any_pb2.Any(type_url=type_url, value=resource)
    else:
        packed = any_pb2.Any()
        packed.Pack(resource, deterministic=True)
    digest = hashlib.blake2b(packed.type_url.encode() + b"\0" + packed.value, digest_size=8)
    return Encoded(packed, digest.hexdigest())


@dataclass(slots=True)
class SotwState:
    """A State-of-the-World stream's subscription to one type."""

    legacy_wildcard: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""
    #: what the last response held, name -> version
    sent: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DeltaState:
    """A Delta stream's subscription to one type."""

    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    nonce: str = ""
    #: what the client has, name -> version
    known: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to send on a stream and the record the server keeps of it."""

    message: Message
    record: SentResponse


class AdsStream:
    """One open ADS stream: its node, the resources it sees and its subscriptions."""

    def __init__(self, stream_id: int, delta: bool) -> None:
        self.id = stream_id
        self.delta = delta
        self.node: base_pb2.Node | None = None
        self.info: NodeInfo | None = None
        self.view: View = {}
        self.sotw: dict[str, SotwState] = {}
        self.deltas: dict[str, DeltaState] = {}
        #: responses, and the server's end-of-stream markers, for the stream's writer
        self.out: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.closed = False

    def push(self, type_url: str, version: str, next_nonce: Callable[[], str]) -> Reply | None:
        """The response for ``type_url`` after :attr:`view` changed, if the stream needs one."""
        if self.delta:
            if type_url in self.deltas:
                return self._delta_reply(type_url, version, next_nonce, newly=(), first=False)
        elif type_url in self.sotw:
            return self._sotw_reply(type_url, version, next_nonce, force=False)
        return None

    def _subscribed(
        self, type_url: str, wildcard: bool, names: Iterable[str]
    ) -> dict[str, Encoded]:
        available = self.view.get(type_url, {})
        if wildcard:
            return dict(available)
        return {n: available[n] for n in names if n in available}

    # State of the World --------------------------------------------------------
    def on_sotw(
        self,
        request: discovery_pb2.DiscoveryRequest,
        version: str,
        next_nonce: Callable[[], str],
    ) -> Reply | None:
        """Apply a DiscoveryRequest; the reply it calls for (none for an ACK, NACK or stale one)."""
        type_url = request.type_url
        state = self.sotw.get(type_url)
        first = state is None
        if state is None:
            state = self.sotw[type_url] = SotwState()
        elif request.response_nonce and request.response_nonce != state.nonce:
            return None  # stale: the client will repeat its subscription with the newest nonce
        names = set(request.resource_names)
        if type_url in WILDCARD_TYPES:
            if (first or state.legacy_wildcard) and not names:
                legacy, wildcard = True, True
            else:
                legacy, wildcard = False, "*" in names
        else:
            legacy, wildcard = False, False
        names.discard("*")
        new_names = frozenset(names)
        if not first and (wildcard, new_names) == (state.wildcard, state.names):
            return None  # ACK or NACK: no reply
        state.legacy_wildcard, state.wildcard, state.names = legacy, wildcard, new_names
        return self._sotw_reply(type_url, version, next_nonce, force=True)

    def _sotw_reply(
        self, type_url: str, version: str, next_nonce: Callable[[], str], *, force: bool
    ) -> Reply | None:
        state = self.sotw[type_url]
        current = self._subscribed(type_url, state.wildcard, state.names)
        versions = {n: e.version for n, e in current.items()}
        if not force:
            if type_url in ALL_REQUIRED:
                if versions == state.sent:
                    return None
            elif all(state.sent.get(n) == v for n, v in versions.items()):
                return None
        nonce = next_nonce()
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[current[n].packed for n in sorted(current)],
            type_url=type_url,
            nonce=nonce,
        )
        state.nonce = nonce
        state.sent = versions
        return Reply(
            response,
            SentResponse(
                stream_id=self.id,
                node_id=self.node.id if self.node else "",
                type_url=type_url,
                version_info=version,
                nonce=nonce,
                resource_names=tuple(sorted(current)),
            ),
        )

    # Delta ------------------------------------------------------------------------
    def on_delta(
        self,
        request: discovery_pb2.DeltaDiscoveryRequest,
        version: str,
        next_nonce: Callable[[], str],
    ) -> Reply | None:
        """Apply a DeltaDiscoveryRequest; the reply it calls for, if any."""
        type_url = request.type_url
        subscribe = tuple(request.resource_names_subscribe)
        unsubscribe = tuple(request.resource_names_unsubscribe)
        state = self.deltas.get(type_url)
        first = state is None
        if state is None:
            state = self.deltas[type_url] = DeltaState()
            state.known.update(request.initial_resource_versions)
            if type_url in WILDCARD_TYPES and not subscribe:
                state.wildcard = True
        for name in subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
        if not state.wildcard:
            for name in list(state.known):
                if name not in state.names:
                    del state.known[name]
        if first or subscribe or unsubscribe:
            return self._delta_reply(type_url, version, next_nonce, newly=subscribe, first=first)
        return None

    def _delta_reply(
        self,
        type_url: str,
        version: str,
        next_nonce: Callable[[], str],
        *,
        newly: Iterable[str],
        first: bool,
    ) -> Reply | None:
        state = self.deltas[type_url]
        current = self._subscribed(type_url, state.wildcard, state.names)
        changed = sorted(n for n, e in current.items() if state.known.get(n) != e.version)
        removed = {n for n in state.known if n not in current}
        removed.update(n for n in newly if n != "*" and n not in current)
        if not changed and not removed and not first:
            return None
        nonce = next_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            resources=[
                discovery_pb2.Resource(
                    name=n, version=current[n].version, resource=current[n].packed
                )
                for n in changed
            ],
            type_url=type_url,
            removed_resources=sorted(removed),
            nonce=nonce,
        )
        for n in changed:
            state.known[n] = current[n].version
        for n in removed:
            state.known.pop(n, None)
        state.nonce = nonce
        return Reply(
            response,
            SentResponse(
                stream_id=self.id,
                node_id=self.node.id if self.node else "",
                type_url=type_url,
                version_info=version,
                nonce=nonce,
                resource_names=tuple(changed),
                removed_resources=tuple(sorted(removed)),
                delta=True,
            ),
        )
