"""Fallback between xDS servers (gRFC A71): the chain rules, then the client's
state machine driven by hand: a transport that records what the client asks
for, stream events given by the test, and a fake clock for the backoff timer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from proxyless.bootstrap import XdsServer, load_bootstrap
from proxyless.errors import ControlPlaneUnreachable
from proxyless.testing import FakeClock
from proxyless.xds_client import DecodeResult, ResourceType, XdsClient
from proxyless.xds_client.fallback import ServerChain
from proxyless.xds_client.loop import run_on_loop
from proxyless.xds_client.transport import StreamEnd

# -- the chain rules ---------------------------------------------------------------------

P, F1, F2 = (load_bootstrap({"xds_servers": [{"server_uri": u, "channel_creds": [{"type": "insecure"}]}]}).xds_servers[0] for u in ("p:1", "f1:1", "f2:1"))  # fmt: skip


def failing_set(*servers: XdsServer) -> Callable[[XdsServer], bool]:
    keys = {s.key for s in servers}
    return lambda s: s.key in keys


def uris(servers: tuple[XdsServer, ...] | None) -> tuple[str, ...] | None:
    return None if servers is None else tuple(s.server_uri for s in servers)


NEW_RESOURCE = [
    # in_use before, failing servers, servers added, in_use after
    pytest.param(0, (), ("p:1",), 1, id="first-watch-opens-primary"),
    pytest.param(0, (P,), ("p:1", "f1:1"), 2, id="first-watch-primary-known-failing"),
    pytest.param(1, (), (), 1, id="primary-healthy-nothing-added"),
    pytest.param(1, (P,), ("f1:1",), 2, id="primary-failing-uncached-watch-falls-back"),
    pytest.param(1, (P, F1), ("f1:1", "f2:1"), 3, id="skips-a-fallback-already-failing"),
    pytest.param(3, (P, F1, F2), (), 3, id="all-in-use-nothing-left"),
]


@pytest.mark.parametrize(("in_use", "failing", "added", "after"), NEW_RESOURCE)
def test_new_resource(
    in_use: int, failing: tuple[XdsServer, ...], added: tuple[str, ...], after: int
) -> None:
    chain = ServerChain((P, F1, F2), in_use)
    assert uris(chain.on_new_resource(failing_set(*failing))) == added
    assert chain.in_use == after


FAILURE = [
    # in_use, failed server, uncached?, failing servers, added (None: not active), in_use after
    pytest.param(1, P, True, (P,), ("f1:1",), 2, id="primary-fails-uncached-falls-back"),
    pytest.param(1, P, False, (P,), (), 1, id="primary-fails-all-cached-keeps-cache"),
    pytest.param(2, P, True, (P,), None, 2, id="primary-retry-fails-while-fallback-active"),
    pytest.param(2, F1, True, (P, F1), ("f2:1",), 3, id="fallback-fails-next-one"),
    pytest.param(3, F2, True, (P, F1, F2), (), 3, id="last-server-fails-report"),
    pytest.param(0, P, True, (P,), None, 0, id="not-in-use"),
]


@pytest.mark.parametrize(("in_use", "failed", "uncached", "failing", "added", "after"), FAILURE)
def test_failure(
    in_use: int,
    failed: XdsServer,
    uncached: bool,
    failing: tuple[XdsServer, ...],
    added: tuple[str, ...] | None,
    after: int,
) -> None:
    chain = ServerChain((P, F1, F2), in_use)
    got = chain.on_failure(failed, uncached=uncached, failing=failing_set(*failing))
    assert uris(got) == added
    assert chain.in_use == after


RESPONSE = [
    # in_use, responding server, dropped, in_use after
    pytest.param(2, P, ("f1:1",), 1, id="primary-back-drops-fallback"),
    pytest.param(3, P, ("f1:1", "f2:1"), 1, id="primary-back-drops-all"),
    pytest.param(3, F1, ("f2:1",), 2, id="first-fallback-back"),
    pytest.param(2, F1, (), 2, id="active-server-response"),
    pytest.param(1, F2, (), 1, id="server-not-in-use"),
]


@pytest.mark.parametrize(("in_use", "server", "dropped", "after"), RESPONSE)
def test_response(in_use: int, server: XdsServer, dropped: tuple[str, ...], after: int) -> None:
    chain = ServerChain((P, F1, F2), in_use)
    assert uris(chain.on_response(server)) == dropped
    assert chain.in_use == after


def test_chain_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ServerChain(())


# -- the client's state machine -----------------------------------------------------------

CLUSTER_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _decode(data: bytes) -> DecodeResult:
    msg = cluster_pb2.Cluster.FromString(data)
    return DecodeResult(msg.name, msg.alt_stat_name)


CDS = ResourceType(CLUSTER_URL, "CDS", True, _decode)


class FakeTransport:
    """Records the requests of each stream; the test plays the server."""

    made: list[FakeTransport]

    def __init__(self, server: XdsServer, loop: Any, **callbacks: Callable[..., None]) -> None:
        self.server = server
        self.callbacks = callbacks
        self.streams = 0
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.closed = False
        self.made.append(self)

    def start_stream(self) -> int:
        self.streams += 1
        return self.streams

    def send(self, request: discovery_pb2.DiscoveryRequest) -> None:
        self.requests.append(request)

    def close(self) -> None:
        self.closed = True

    def names(self) -> set[str]:
        return set(self.requests[-1].resource_names) if self.requests else set()

    # server side, called on the client's loop
    def respond(self, version: str, **values: str) -> None:
        resp = discovery_pb2.DiscoveryResponse(
            type_url=CLUSTER_URL, version_info=version, nonce=f"n{version}"
        )
        for name, tag in values.items():
            resp.resources.add().Pack(cluster_pb2.Cluster(name=name, alt_stat_name=tag))
        self.callbacks["on_response"](self.streams, resp)

    def fail(self) -> None:
        end = StreamEnd(self.streams, grpc.StatusCode.UNAVAILABLE, "connection refused", False)
        self.callbacks["on_stream_end"](end)

    def ready(self) -> None:
        self.callbacks["on_ready"](True)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_changed(self, value: Any) -> None:
        self.events.append(("changed", value))

    def on_resource_error(self, error: Exception) -> None:
        self.events.append(("resource_error", error))

    def on_ambient_error(self, error: Exception) -> None:
        self.events.append(("ambient_error", error))


class Harness:
    def __init__(
        self,
        servers: tuple[str, ...],
        creds: dict[str, Any] | None = None,
        features: tuple[str, ...] = (),
        document: dict[str, Any] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clock = FakeClock()
        self.transports: dict[str, FakeTransport] = {}
        made: list[FakeTransport] = []
        factory = type("T", (FakeTransport,), {"made": made})
        self._made = made
        bootstrap = load_bootstrap(
            document
            or {
                "xds_servers": [
                    {
                        "server_uri": s,
                        "channel_creds": [creds or {"type": "insecure"}],
                        "server_features": list(features),
                    }
                    for s in servers
                ],
                "node": {"id": "unit"},
            }
        )
        self.client = XdsClient(
            bootstrap, self.loop, resource_types=[CDS], clock=self.clock, transport_factory=factory
        )

    def run(self, fn: Callable[[], Any]) -> Any:
        return run_on_loop(self.loop, fn, 5.0)

    def t(self, uri: str) -> FakeTransport:
        """The newest transport made for ``uri``."""
        return self.run(lambda: [t for t in self._made if t.server.server_uri == uri][-1])

    def uris(self) -> list[str]:
        return self.run(lambda: [t.server.server_uri for t in self._made])

    def watch(self, name: str) -> Recorder:
        rec = Recorder()
        self.client.watch(CDS, name, rec)
        self.run(lambda: None)
        self.run(lambda: None)  # the coalesced request goes out one loop turn later
        return rec

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run(lambda: None)

    def sources(self) -> dict[str, str]:
        return {s.name: s.server for s in self.client.dump() if s.cached}

    def close(self) -> None:
        self.client.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        *servers: str,
        creds: dict[str, Any] | None = None,
        features: tuple[str, ...] = (),
        document: dict[str, Any] | None = None,
    ) -> Harness:
        h = Harness(servers, creds, features, document)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_all_cached_keeps_cache_and_retries_primary_then_falls_back_for_a_new_name(
    harness: Callable[..., Harness],
) -> None:
    h = harness("p:1", "f:1")
    wa = h.watch("a")
    p = h.t("p:1")
    h.run(p.ready)
    h.run(lambda: p.respond("1", a="a-p1"))
    assert wa.events == [("changed", "a-p1")]

    h.run(p.fail)  # primary lost, everything cached: no fallback
    assert h.uris() == ["p:1"]
    assert [k for k, _ in wa.events] == ["changed", "ambient_error"]
    assert isinstance(wa.events[-1][1], ControlPlaneUnreachable)
    assert p.streams == 1
    h.advance(1.3)  # the backoff timer (1 s +-20 %) reconnects the primary
    assert p.streams == 2
    h.run(p.fail)

    wb = h.watch("b")  # not cached while the primary fails -> fallback
    assert h.uris() == ["p:1", "f:1"]
    f = h.t("f:1")
    assert f.names() == {"a", "b"}  # every resource of the authority
    assert wb.events == []  # the fallback may still answer: no error yet
    h.run(f.ready)
    h.run(lambda: f.respond("7", a="a-f7", b="b-f7"))
    assert wa.events[-1] == ("changed", "a-f7")  # the fallback's values replace the cache
    assert wb.events == [("changed", "b-f7")]
    assert h.sources() == {"a": "f:1", "b": "f:1"}

    h.advance(3.0)  # primary retried with both names, and answers this time
    assert p.streams == 3 and p.names() == {"a", "b"}
    h.run(lambda: p.respond("2", a="a-p2", b="b-f7"))
    assert f.closed  # back on the primary: the fallback's stream is closed
    assert h.sources() == {"a": "p:1", "b": "p:1"}
    assert wa.events[-1] == ("changed", "a-p2")
    assert wb.events == [("changed", "b-f7")]  # same value: not told again
    assert [s["server_uri"] for s in h.client.server_states()] == ["p:1"]


def test_primary_fails_with_uncached_resource_falls_back_then_last_server_reports(
    harness: Callable[..., Harness],
) -> None:
    h = harness("p:1", "f:1")
    wa = h.watch("a")
    h.run(h.t("p:1").fail)  # nothing cached -> fallback at once, no error yet
    assert h.uris() == ["p:1", "f:1"] and wa.events == []
    h.run(h.t("f:1").fail)  # the last server fails too: now the watchers hear of it
    assert [k for k, _ in wa.events] == ["resource_error"]
    assert "f:1 unreachable" in str(wa.events[0][1])


def test_fallback_deletions_apply_only_from_the_active_server(
    harness: Callable[..., Harness],
) -> None:
    h = harness("p:1", "f:1")
    wa = h.watch("a")
    p = h.t("p:1")
    h.run(p.fail)
    f = h.t("f:1")
    h.run(lambda: f.respond("1", a="a-f1"))
    wb = h.watch("b")
    h.run(lambda: f.respond("2", a="a-f2", b="b-f2"))
    assert wb.events == [("changed", "b-f2")]
    h.run(lambda: f.respond("3", b="b-f3"))  # the active server deleted "a" (CDS is SotW)
    assert wa.events[-1][0] == "resource_error"
    assert "a" not in h.sources()


def test_tls_files_are_read_again_at_a_reconnect_after_refresh_interval(
    harness: Callable[..., Harness],
) -> None:
    tls = {"ca_certificate_file": "/ca.pem", "refresh_interval": "30s"}
    h = harness("p:1", creds={"type": "tls", "config": tls})
    h.watch("a")
    first = h.t("p:1")
    h.run(lambda: first.respond("1", a="a1"))
    end = StreamEnd(first.streams, grpc.StatusCode.UNAVAILABLE, "GOAWAY", True)
    h.run(lambda: first.callbacks["on_stream_end"](end))
    assert h.uris() == ["p:1"] and first.streams == 2  # same channel within 30 s
    h.advance(31.0)
    end = StreamEnd(first.streams, grpc.StatusCode.UNAVAILABLE, "GOAWAY", True)
    h.run(lambda: first.callbacks["on_stream_end"](end))
    assert first.closed and h.uris() == ["p:1", "p:1"]  # a new channel reads the files
    assert h.t("p:1").names() == {"a"}


def test_delta_resubscribes_a_name_cancelled_and_watched_again_across_a_reconnect(
    harness: Callable[..., Harness],
) -> None:
    h = harness("p:1", features=("delta_xds",))
    cancel = h.client.watch(CDS, "a", Recorder())
    h.run(lambda: None)
    p = h.t("p:1")
    first = p.requests[-1]
    assert isinstance(first, discovery_pb2.DeltaDiscoveryRequest)
    assert list(first.resource_names_subscribe) == ["a"] and first.node.id == "unit"
    h.run(p.fail)  # stream down: the cancel below cannot be sent
    cancel()
    h.advance(1.3)  # reconnect: nothing watched, nothing sent (no wildcard request)
    assert p.streams == 2 and len(p.requests) == 1
    h.watch("a")
    again = p.requests[-1]
    assert list(again.resource_names_subscribe) == ["a"]
    assert again.node.id == "unit"  # the first request of the new stream carries the node


def test_fallback_is_per_authority(harness: Callable[..., Harness]) -> None:
    insecure = [{"type": "insecure"}]
    h = harness(
        document={
            "xds_servers": [{"server_uri": "p:1", "channel_creds": insecure}],
            "node": {"id": "unit"},
            "authorities": {
                "x": {
                    "xds_servers": [
                        {"server_uri": "p:1", "channel_creds": insecure},
                        {"server_uri": "f:1", "channel_creds": insecure},
                    ]
                }
            },
        }
    )
    federated = "xdstp://x/envoy.config.cluster.v3.Cluster/b"
    wa, wb = h.watch("a"), h.watch(federated)
    p = h.t("p:1")
    assert p.names() == {"a", federated}  # one stream for the server both list
    h.run(p.fail)
    assert h.uris() == ["p:1", "f:1"]
    assert h.t("f:1").names() == {federated}  # only authority x falls back
    assert [k for k, _ in wa.events] == ["resource_error"]  # no fallback for the top level
    assert wb.events == []
