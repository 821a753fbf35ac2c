"""What a proxyless gRPC channel keeps, shared by the sync and ``grpc.aio``
channels: the target's runtime, the endpoint connections, and the fast-path
lanes.

- :meth:`ChannelCore.route` routes a call on the target's current snapshot
  (:class:`~proxyless.runtime.call.Call`: virtual host and route, gRFC A28;
  breaker, gRFC A32; EDS drops; fault filter, gRFC A33).
- :meth:`ChannelCore.acquire` gives the pooled grpcio channel of an
  endpoint (:mod:`._pool`): cached per endpoint for the sync channel, looked
  up per call for ``grpc.aio`` (connections belong to the running loop).
- Lanes (:class:`~proxyless.runtime.call.Lane`): a call without metadata
  routes the same way every time, so once a method's route is found
  deterministic its calls skip routing while the snapshot is current. A new
  snapshot drops every lane, so methods not called again keep no old
  snapshot alive.

Endpoints of TLS clusters are reached through verified mTLS connections
made with the cluster's current credentials (:mod:`._tls`): ``acquire``
is every call's ``pool_get`` and is given the endpoint's cluster. The
channel's ``credentials=`` apply to plaintext clusters only.

Calls carry ``:authority`` = the target's name (e.g.
``reviews.default.svc.cluster.local:9080``), as gRPC's own xDS channels do.
See docs/architecture.md for the whole request path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import grpc

from proxyless.grpc._invocation import metadata_headers
from proxyless.grpc._pool import ChannelPool, PooledChannel
from proxyless.lb.state import EndpointState
from proxyless.mesh import Mesh
from proxyless.routing import RequestInfo
from proxyless.runtime.call import Call, Lane
from proxyless.runtime.cluster import ClusterRuntime
from proxyless.runtime.target import TargetRuntime, deterministic
from proxyless.security.credentials import ClusterCredentials

__all__ = ["ChannelCore"]

#: Fast-path lanes kept per channel, at most (the table is emptied when full).
_LANE_LIMIT = 1024
#: Endpoint connections remembered per sync channel, at most.
_CONN_LIMIT = 4096
_channel_ids = itertools.count(1)


class ChannelCore:
    """See the module docstring. ``loop_bound`` selects the ``grpc.aio``
    behaviour: endpoint channels of the running event loop."""

    __slots__ = (
        "_bare",
        "_conns",
        "_getters",
        "_lanes_state",
        "_no_lane",
        "channel_id",
        "closed",
        "credentials",
        "lanes",
        "loop",
        "loop_bound",
        "mesh",
        "options",
        "pool",
        "rng",
        "runtime",
        "security_key",
        "target",
    )

    def __init__(
        self,
        target: str,
        mesh: Mesh | None,
        options: Sequence[tuple[str, Any]] | None,
        credentials: grpc.ChannelCredentials | None,
        pool: ChannelPool,
        loop_bound: bool = False,
    ) -> None:
        self.mesh = mesh or Mesh.default()
        # Every call carries the target's authority: the clusters of the
        # virtual host it selects are all the channel needs (gRFC A74).
        self.runtime: TargetRuntime = self.mesh.target(target, every_host=False)
        self.target = target
        self.pool = pool
        self.mesh.clusters.add_pool(pool)
        self.options = tuple(options or ())
        self.credentials = credentials
        self.security_key = (id(credentials) if credentials else None, self.options)
        self.channel_id = next(_channel_ids)
        self.rng = self.mesh.rng
        self.closed = False
        self.loop_bound = loop_bound
        self.loop: asyncio.AbstractEventLoop | None = None
        self._bare: dict[str, RequestInfo] = {}
        #: per method, the lane of calls without metadata (the fast path), and
        #: the snapshot in which a method's route did not qualify for one
        self.lanes: dict[str, Lane] = {}
        self._no_lane: dict[str, object] = {}
        self._lanes_state: object = None
        #: the pooled connection of each endpoint this channel has used (sync)
        self._conns: dict[EndpointState, PooledChannel] = {}

    # -- routing -------------------------------------------------------------------------
    def route(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        timeout: float | None,
        wait_for_ready: bool | None,
    ) -> Call:
        """Route a call; raises ProxylessError (converted by the caller)."""
        if self.closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        rt = self.runtime
        if metadata:
            request = RequestInfo(rt.authority, method, headers=metadata_headers(metadata))
        else:
            request = self.bare_request(method)
        return Call(
            rt,
            request,
            timeout=timeout,
            wait_for_ready=bool(wait_for_ready),
            channel_id=self.channel_id,
            pool_get=self.acquire,
            shared_request=not metadata,
        )

    def bare_request(self, method: str) -> RequestInfo:
        """Calls without metadata share one immutable RequestInfo per method."""
        request = self._bare.get(method)
        if request is None:
            request = self._bare[method] = RequestInfo(self.runtime.authority, method)
        return request

    # -- lanes ---------------------------------------------------------------------------
    def lane(self, method: str) -> Lane | None:
        """``method``'s lane, if it has one on the current snapshot."""
        lane = self.lanes.get(method)
        if lane is None or lane.state is not self.runtime._state or self.closed:
            return None
        return lane

    def learn(self, method: str, state: object, call: Call) -> None:
        """Remember ``call``'s route as ``method``'s lane when it qualifies:
        a call without metadata routes the same way every time, so a
        deterministic route (one cluster, no runtime fraction) is enough."""
        if self._no_lane.get(method) is state:
            return
        if self._lanes_state is not state:
            # A new snapshot: every lane is stale; drop them rather than keep
            # old snapshots alive through methods that are not called again.
            self.lanes.clear()
            self._no_lane.clear()
            self._lanes_state = state
        lane = Lane.for_call(self.runtime, state, call, is_grpc=True)
        if lane is None or not deterministic(call.route):
            if len(self._no_lane) >= _LANE_LIMIT:
                self._no_lane.clear()
            self._no_lane[method] = state
            return
        if len(self.lanes) >= _LANE_LIMIT:
            self.lanes.clear()
        self.lanes[method] = lane

    # -- endpoint connections ---------------------------------------------------------------
    def acquire(
        self, endpoint: EndpointState, cluster: ClusterRuntime | None = None
    ) -> PooledChannel:
        """The endpoint's pooled channel, counted in flight until
        :meth:`ChannelPool.call_ended`. For an endpoint of a TLS cluster,
        a channel whose connections use the cluster's current credentials;
        raises :class:`~proxyless.errors.SecurityError` when there are none.
        An aggregate cluster's endpoint is reached as its leaf cluster says
        (``ClusterRegistry.leaf_of``; ``ClusterNotAvailable`` when the leaf is
        gone)."""
        if cluster is not None:
            if cluster.config.children:
                cluster = self.mesh.clusters.leaf_of(cluster, endpoint)
            if cluster.tls is not None:
                return self._acquire_tls(endpoint, cluster.tls)
        if self.loop_bound:
            # Connections belong to the running loop: look them up every time.
            pooled: PooledChannel = self.pool.get(
                endpoint.address,
                self.credentials,
                self.security_key,
                loop=self.loop,
                authority=self.runtime.authority,
                options=self.options,
            )
        else:
            conns = self._conns
            pooled = conns.get(endpoint)  # type: ignore[assignment]
            if pooled is None or pooled.closing or pooled.tls is not None:
                pooled = self.pool.get(
                    endpoint.address,
                    self.credentials,
                    self.security_key,
                    authority=self.runtime.authority,
                    options=self.options,
                )
                if len(conns) > _CONN_LIMIT:
                    conns.clear()
                conns[endpoint] = pooled
        if endpoint.watcher is not pooled:
            pooled.watch(endpoint)  # its connectivity feeds the pickers
        pooled.in_flight += 1
        return pooled

    def _acquire_tls(self, endpoint: EndpointState, creds: ClusterCredentials) -> PooledChannel:
        tls = creds.current()  # fail closed: raises what stands in for missing material
        authority = self.runtime.authority
        if self.loop_bound:
            pooled = self.pool.get_tls(
                endpoint.address,
                tls,
                creds,
                loop=self.loop,
                authority=authority,
                options=self.options,
            )
        else:
            conns = self._conns
            pooled = conns.get(endpoint)  # type: ignore[assignment]
            if pooled is None or pooled.closing or pooled.tls is not tls:
                pooled = self.pool.get_tls(
                    endpoint.address, tls, creds, authority=authority, options=self.options
                )
                if len(conns) > _CONN_LIMIT:
                    conns.clear()
                conns[endpoint] = pooled
        if endpoint.watcher is not pooled:
            pooled.watch(endpoint)  # its connectivity feeds the pickers
        pooled.in_flight += 1
        return pooled

    def connectivity(self) -> grpc.ChannelConnectivity:
        """READY once the target has a config, CONNECTING before."""
        if self.runtime._state is not None:
            return grpc.ChannelConnectivity.READY
        return grpc.ChannelConnectivity.CONNECTING

    def __repr__(self) -> str:
        return f"<ChannelCore {self.target!r} lanes={len(self.lanes)}>"
