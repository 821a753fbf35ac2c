"""Load reporting (LRS): what this client sent to each cluster, reported to
the xDS server that asked for it.

A cluster whose CDS resource names ``lrs_server: {self: {}}`` wants its load
reported to the ADS server (Envoy's ``LoadReportingService``, the
``envoy.service.load_stats.v3`` API; gRPC's xDS clients report the same way,
gRFC A27's LRS part). :class:`LoadReporter` keeps one
``StreamLoadStats`` stream to the Mesh's first xDS server while any such
cluster exists:

1. the client opens the stream with its Node (with the
   ``envoy.lrs.supports_send_all_clusters`` client feature);
2. the server answers which clusters it wants (or ``send_all_clusters``)
   and the ``load_reporting_interval``; every answer replaces the last;
3. every interval the client sends a ``ClusterStats`` per wanted cluster
   that has ``lrs_server`` set: per locality (and per endpoint when the
   server asks for ``report_endpoint_granularity``) the requests
   **issued**, **succeeded** and **failed** since the last report, the
   requests **in progress** now, and the requests **dropped** by EDS
   ``drop_overloads`` per category, with the interval actually covered.

The counts come from what the request path already keeps per endpoint
(``total_requests``, ``total_successes``, ``total_errors``,
``active_requests``) and per cluster (drops): reporting costs the data path
nothing. A request succeeded when its attempt did (gRPC OK, HTTP below
500... as the outcome classification says: :mod:`proxyless.resilience.outcome`);
an attempt that failed counts as an error. When the stream ends it is
reopened with the xDS client's backoff; counts made meanwhile go into the
next report.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from google.protobuf import duration_pb2

from proxyless.bootstrap.model import XdsServer
from proxyless.lb.state import EndpointState
from proxyless.xds_client.backoff import Backoff
from proxyless.xds_client.transport import channel_credentials

__all__ = ["LRS_FEATURE", "LoadReporter", "LoadStore"]

log = logging.getLogger("proxyless.lrs")

#: The client feature that lets an LRS server answer ``send_all_clusters``.
LRS_FEATURE = "envoy.lrs.supports_send_all_clusters"

_Counts = tuple[int, int, int]  # issued, succeeded, failed


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


class LoadStore:
    """Turns the running totals of clusters into per-interval
    ``ClusterStats`` (the deltas since the last report of each)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[tuple[str, tuple[str, int]], _Counts] = {}
        self._last_drops: dict[str, dict[str, int]] = {}
        self._since: dict[str, float] = {}

    def cluster_stats(self, cluster: Any, endpoints: bool = False) -> load_report_pb2.ClusterStats:
        """The report of ``cluster`` (a ClusterRuntime) since its last one."""
        name = cluster.name
        now = self._clock()
        since = self._since.get(name, now)
        self._since[name] = now
        out = load_report_pb2.ClusterStats(cluster_name=name)
        config = cluster.config.cluster
        service = getattr(config, "eds_service_name", "") if config is not None else ""
        if service:
            out.cluster_service_name = service
        by_locality: dict[Any, list[EndpointState]] = {}
        for es in cluster.endpoints():
            by_locality.setdefault((es.locality, es.priority), []).append(es)
        for (locality, priority), members in by_locality.items():
            stats = out.upstream_locality_stats.add(priority=priority)
            stats.locality.region = locality.region
            stats.locality.zone = locality.zone
            stats.locality.sub_zone = locality.sub_zone
            for es in members:
                issued, ok, failed = self._delta(name, es)
                stats.total_issued_requests += issued
                stats.total_successful_requests += ok
                stats.total_error_requests += failed
                in_progress = max(0, es.active_requests)
                stats.total_requests_in_progress += in_progress
                if endpoints:
                    ep = stats.upstream_endpoint_stats.add(
                        total_issued_requests=issued,
                        total_successful_requests=ok,
                        total_error_requests=failed,
                        total_requests_in_progress=in_progress,
                    )
                    host, port = es.key
                    ep.address.socket_address.address = host
                    ep.address.socket_address.port_value = port
        drops = dict(getattr(cluster, "drops", {}))
        last = self._last_drops.get(name, {})
        total = 0
        for category, count in sorted(drops.items()):
            delta = count - last.get(category, 0)
            if delta > 0:
                out.dropped_requests.add(category=category, dropped_count=delta)
                total += delta
        self._last_drops[name] = drops
        out.total_dropped_requests = total
        out.load_report_interval.CopyFrom(_duration(max(0.0, now - since)))
        return out

    def _delta(self, cluster: str, es: EndpointState) -> _Counts:
        now = (es.total_requests, es.total_successes, es.total_errors)
        key = (cluster, es.key)
        before = self._last.get(key, (0, 0, 0))
        self._last[key] = now
        # An endpoint that left and came back starts its totals again.
        if any(n < b for n, b in zip(now, before, strict=True)):
            before = (0, 0, 0)
        return now[0] - before[0], now[1] - before[1], now[2] - before[2]

    def start(self, cluster: str) -> None:
        """Reports of ``cluster`` cover the time from now."""
        self._since.setdefault(cluster, self._clock())


class LoadReporter:
    """The LRS stream of one Mesh (see the module docstring). ``clusters``
    returns the clusters with ``lrs_server`` set (name -> ClusterRuntime)."""

    def __init__(
        self,
        server: XdsServer,
        node: Any,
        clusters: Callable[[], dict[str, Any]],
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = server
        self._node = node
        if LRS_FEATURE not in node.client_features:
            node.client_features.append(LRS_FEATURE)
        self._clusters = clusters
        self._backoff = backoff or Backoff()
        self._store = LoadStore()
        self._lock = threading.Lock()
        self._wanted: frozenset[str] = frozenset()
        self._all = False
        self._endpoints = False
        self._interval: float | None = None
        self._closed = threading.Event()
        self._requests: queue.SimpleQueue[Any] | None = None
        self._call: Any = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Thread | None = None
        self.reports_sent = 0
        self.connected = False

    def ensure_started(self) -> None:
        """Open the stream, once (a cluster with ``lrs_server`` appeared)."""
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="proxyless-lrs", daemon=True)
            self._thread.start()

    # -- the stream ------------------------------------------------------------------
    def _run(self) -> None:
        creds = channel_credentials(self.server)
        uri = self.server.server_uri
        channel = grpc.insecure_channel(uri) if creds is None else grpc.secure_channel(uri, creds)
        stub = lrs_pb2_grpc.LoadReportingServiceStub(channel)
        try:
            while not self._closed.is_set():
                got_response = self._stream(stub)
                if self._closed.is_set():
                    return
                if got_response:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
                log.warning(
                    "LRS stream to %s ended; reconnecting in %.1fs", self.server.server_uri, delay
                )
                self._closed.wait(delay)
        finally:
            channel.close()

    def _stream(self, stub: Any) -> bool:
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        requests.put(lrs_pb2.LoadStatsRequest(node=self._node))
        with self._lock:
            self._requests = requests
            call = self._call = stub.StreamLoadStats(_drain(requests, self._closed))
        got = False
        try:
            for response in call:
                got = True
                self.connected = True
                self._answer(response)
        except grpc.RpcError as exc:
            if not self._closed.is_set():
                log.debug("LRS stream ended: %s", exc)
        finally:
            self.connected = False
            with self._lock:
                self._requests = None
                self._call = None
        return got

    def _answer(self, response: lrs_pb2.LoadStatsResponse) -> None:
        interval = response.load_reporting_interval.ToNanoseconds() / 1e9
        with self._lock:
            self._wanted = frozenset(response.clusters)
            self._all = response.send_all_clusters
            self._endpoints = response.report_endpoint_granularity
            first = self._interval is None
            self._interval = max(interval, 0.01)
            for name in self._wanted:
                self._store.start(name)
        if first:
            self._timer = threading.Thread(
                target=self._report_loop, name="proxyless-lrs-report", daemon=True
            )
            self._timer.start()

    def _report_loop(self) -> None:
        while True:
            with self._lock:
                interval = self._interval or 1.0
            if self._closed.wait(interval):
                return
            self.report_now()

    def report_now(self) -> None:
        """Send a report of every wanted cluster now (the timer does this
        every ``load_reporting_interval``)."""
        with self._lock:
            requests = self._requests
            wanted, everything, endpoints = self._wanted, self._all, self._endpoints
        if requests is None:
            return
        clusters = self._clusters()
        names = sorted(clusters if everything else wanted & clusters.keys())
        stats = [self._store.cluster_stats(clusters[n], endpoints) for n in names]
        requests.put(lrs_pb2.LoadStatsRequest(node=self._node, cluster_stats=stats))
        self.reports_sent += 1

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call = self._call
            requests = self._requests
        if requests is not None:
            requests.put(None)
        if call is not None:
            call.cancel()


def _drain(requests: queue.SimpleQueue[Any], closed: threading.Event) -> Iterator[Any]:
    """The stream's requests, until the reporter closes."""
    while not closed.is_set():
        item = requests.get()
        if item is None:
            return
        yield item
