"""AdsServer protocol behaviour over real gRPC streams on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2

from proxyless.controlplane.model import NodeInfo, Snapshot
from proxyless.controlplane.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    AdsServer,
)
from proxyless.testing.controlplane import RawAdsStream, make_node


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout_s
    return c


def cla(name: str) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name)


def names(response: object) -> list[str]:
    out = []
    for any_msg in response.resources:  # type: ignore[attr-defined]
        if hasattr(any_msg, "resource") and any_msg.HasField("resource"):
            out.append(any_msg.name)
            continue
        if any_msg.type_url == CLUSTER_TYPE:
            c = cluster_pb2.Cluster()
        elif any_msg.type_url == ENDPOINT_TYPE:
            c = endpoint_pb2.ClusterLoadAssignment()
        else:
            c = listener_pb2.Listener()
        any_msg.Unpack(c)
        out.append(c.cluster_name if any_msg.type_url == ENDPOINT_TYPE else c.name)
    return sorted(out)


@pytest.fixture
def server() -> Iterator[AdsServer]:
    srv = AdsServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def sotw(server: AdsServer) -> Iterator[RawAdsStream]:
    with RawAdsStream(server.target) as stream:
        yield stream


@pytest.fixture
def delta(server: AdsServer) -> Iterator[RawAdsStream]:
    with RawAdsStream(server.target, delta=True) as stream:
        yield stream


def test_start_returns_port_and_target(server: AdsServer) -> None:
    assert server.port > 0
    assert server.target == f"127.0.0.1:{server.port}"


def test_sotw_subscribe_ack_and_push(server: AdsServer, sotw: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    sotw.request(CLUSTER_TYPE, ["a"], node=make_node("n1"))
    r1 = sotw.recv()
    assert names(r1) == ["a"]
    assert r1.version_info == "1"
    assert r1.nonce
    # ACK gets no reply: the next response must be the one for the EDS request below.
    sotw.request(CLUSTER_TYPE, ["a"], version_info=r1.version_info, nonce=r1.nonce)
    sotw.request(ENDPOINT_TYPE, ["x"])
    r2 = sotw.recv()
    assert r2.type_url == ENDPOINT_TYPE
    assert list(r2.resources) == []
    # a change of a subscribed resource is pushed
    server.set_resource(CLUSTER_TYPE, "a", cluster("a", 2))
    r3 = sotw.recv()
    assert r3.type_url == CLUSTER_TYPE
    assert r3.version_info == "2"
    assert names(r3) == ["a"]
    assert server.streams_opened == 1
    assert server.open_streams == 1
    ack = server.wait_for(lambda r: r.type_url == CLUSTER_TYPE and r.response_nonce == r1.nonce)
    assert ack.node.id == "n1"
    assert not ack.is_nack


def test_sotw_no_push_when_unsubscribed_resource_changes(
    server: AdsServer, sotw: RawAdsStream
) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a")})
    server.set_resources(ENDPOINT_TYPE, {"a": cla("a"), "b": cla("b")})
    sotw.request(ENDPOINT_TYPE, ["a"], node=make_node())
    r1 = sotw.recv()
    assert names(r1) == ["a"]
    sotw.request(ENDPOINT_TYPE, ["a"], version_info=r1.version_info, nonce=r1.nonce)
    server.set_resource(ENDPOINT_TYPE, "b", cla("b2"))  # not subscribed: no push
    server.set_resource(CLUSTER_TYPE, "a", cluster("a", 3))  # type not subscribed: no push
    sotw.request(LISTENER_TYPE, ["l"])  # barrier
    assert sotw.recv().type_url == LISTENER_TYPE


def test_sotw_legacy_wildcard_and_removal(server: AdsServer, sotw: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    sotw.request(CLUSTER_TYPE, [], node=make_node())
    r1 = sotw.recv()
    assert names(r1) == ["a", "b"]
    sotw.request(CLUSTER_TYPE, [], version_info=r1.version_info, nonce=r1.nonce)
    server.set_resource(CLUSTER_TYPE, "c", cluster("c"))
    assert names(sotw.recv()) == ["a", "b", "c"]
    server.set_resource(CLUSTER_TYPE, "a", None)
    assert names(sotw.recv()) == ["b", "c"]


def test_sotw_empty_names_on_eds_is_not_wildcard(server: AdsServer, sotw: RawAdsStream) -> None:
    server.set_resources(ENDPOINT_TYPE, {"a": cla("a")})
    sotw.request(ENDPOINT_TYPE, [], node=make_node())
    assert names(sotw.recv()) == []


def test_sotw_nack_recorded_and_not_retried(server: AdsServer, sotw: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"bad": b"\xff\xff garbage"})
    sotw.request(CLUSTER_TYPE, ["bad"], node=make_node())
    r1 = sotw.recv()
    assert r1.resources[0].value == b"\xff\xff garbage"
    sotw.request(CLUSTER_TYPE, ["bad"], nonce=r1.nonce, error="cannot parse")
    nack = server.wait_for(lambda r: r.is_nack)
    assert nack.error_detail is not None
    assert nack.error_detail.message == "cannot parse"
    assert server.nacks() == [nack]
    sotw.request(ENDPOINT_TYPE, ["x"])  # barrier: the NACK got no reply
    assert sotw.recv().type_url == ENDPOINT_TYPE


def test_sotw_stale_nonce_ignored(server: AdsServer, sotw: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    sotw.request(CLUSTER_TYPE, ["a"], node=make_node())
    r1 = sotw.recv()
    server.set_resource(CLUSTER_TYPE, "a", cluster("a", 5))
    r2 = sotw.recv()
    sotw.request(CLUSTER_TYPE, ["a", "b"], nonce=r1.nonce)  # stale
    sotw.request(CLUSTER_TYPE, ["a", "b"], nonce=r2.nonce)  # current, names changed
    r3 = sotw.recv()
    assert names(r3) == ["a", "b"]
    assert r3.nonce != r2.nonce


def test_disconnect_all_aborts_with_unavailable(server: AdsServer, sotw: RawAdsStream) -> None:
    sotw.request(LISTENER_TYPE, ["l"], node=make_node())
    sotw.recv()
    server.disconnect_all()
    with pytest.raises(EOFError):
        sotw.recv()
    assert sotw.error is not None
    assert sotw.error.code() == grpc.StatusCode.UNAVAILABLE
    # the server still serves new streams
    with RawAdsStream(server.target) as again:
        again.request(LISTENER_TYPE, ["l"], node=make_node())
        assert again.recv().type_url == LISTENER_TYPE
    assert server.streams_opened == 2


def test_wait_for_times_out_with_recent_requests(server: AdsServer, sotw: RawAdsStream) -> None:
    sotw.request(LISTENER_TYPE, ["l"], node=make_node("who"))
    sotw.recv()
    with pytest.raises(TimeoutError, match="who"):
        server.wait_for(lambda r: r.is_nack, timeout=0.2)


def test_snapshot_fn_per_node_and_refresh(server: AdsServer) -> None:
    table = {"a": {"c1": cluster("c1")}, "b": {"c2": cluster("c2")}}

    def snapshot(node: NodeInfo) -> Snapshot:
        return Snapshot({CLUSTER_TYPE: table[node.id]})

    srv = AdsServer(snapshot_fn=snapshot)
    srv.start()
    try:
        with RawAdsStream(srv.target) as s1, RawAdsStream(srv.target) as s2:
            s1.request(CLUSTER_TYPE, [], node=make_node("a"))
            s2.request(CLUSTER_TYPE, [], node=make_node("b"))
            r1, r2 = s1.recv(), s2.recv()
            assert names(r1) == ["c1"]
            assert names(r2) == ["c2"]
            s1.request(CLUSTER_TYPE, [], version_info=r1.version_info, nonce=r1.nonce)
            s2.request(CLUSTER_TYPE, [], version_info=r2.version_info, nonce=r2.nonce)
            table["b"] = {"c2": cluster("c2"), "c3": cluster("c3")}
            srv.refresh()
            assert names(s2.recv()) == ["c2", "c3"]
            s1.request(ENDPOINT_TYPE, ["x"])  # barrier: node a got no push
            assert s1.recv().type_url == ENDPOINT_TYPE
    finally:
        srv.stop()


def test_delta_subscribe_update_remove(server: AdsServer, delta: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    delta.delta_request(CLUSTER_TYPE, ["a", "missing"], node=make_node())
    r1 = delta.recv()
    assert [r.name for r in r1.resources] == ["a"]
    assert list(r1.removed_resources) == ["missing"]
    version_a = r1.resources[0].version
    delta.delta_request(CLUSTER_TYPE, nonce=r1.nonce)  # ACK
    server.set_resource(CLUSTER_TYPE, "b", cluster("b", 7))  # not subscribed
    server.set_resource(CLUSTER_TYPE, "a", cluster("a", 9))
    r2 = delta.recv()
    assert [r.name for r in r2.resources] == ["a"]
    assert r2.resources[0].version != version_a
    server.set_resource(CLUSTER_TYPE, "a", None)
    r3 = delta.recv()
    assert list(r3.resources) == []
    assert list(r3.removed_resources) == ["a"]


def test_delta_wildcard_and_initial_versions(server: AdsServer, delta: RawAdsStream) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    with RawAdsStream(server.target, delta=True) as first:
        first.delta_request(CLUSTER_TYPE, [], node=make_node())
        r = first.recv()
        versions = {res.name: res.version for res in r.resources}
    assert sorted(versions) == ["a", "b"]
    server.set_resource(CLUSTER_TYPE, "b", cluster("b", 4))
    # reconnect knowing a and the old b: only b is resent
    delta.delta_request(CLUSTER_TYPE, [], initial_versions=versions, node=make_node())
    r2 = delta.recv()
    assert [res.name for res in r2.resources] == ["b"]
    assert list(r2.removed_resources) == []
    req = server.wait_for(lambda q: q.delta and bool(q.initial_resource_versions))
    assert dict(req.initial_resource_versions) == versions


def test_delta_nack_recorded(server: AdsServer, delta: RawAdsStream) -> None:
    server.set_resources(ENDPOINT_TYPE, {"e": b"\x08\x08\x08"})
    delta.delta_request(ENDPOINT_TYPE, ["e"], node=make_node())
    r1 = delta.recv()
    delta.delta_request(ENDPOINT_TYPE, nonce=r1.nonce, error="bad endpoint")
    nack = server.wait_for(lambda r: r.is_nack)
    assert nack.delta
    assert nack.response_nonce == r1.nonce


def test_stop_closes_streams(sotw: RawAdsStream) -> None:
    srv = AdsServer()
    srv.start()
    with RawAdsStream(srv.target) as s:
        s.request(LISTENER_TYPE, ["l"], node=make_node())
        s.recv()
        srv.stop()
        with pytest.raises(EOFError):
            s.recv()
    assert srv.open_streams == 0


def test_port_in_use_is_an_os_error(server: AdsServer) -> None:
    second = AdsServer(port=server.port)
    with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{server.port}"):
        second.start()


def test_max_records_keeps_the_newest() -> None:
    srv = AdsServer(max_records=3)
    srv.start()
    try:
        with RawAdsStream(srv.target) as s:
            for i in range(5):
                s.request(ENDPOINT_TYPE, [f"e{i}"], node=make_node())
                s.recv()
        assert [r.resource_names for r in srv.requests] == [("e2",), ("e3",), ("e4",)]
        assert len(srv.responses) == 3
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        pytest.param([[], ["a"]], [["a", "b"], ["a"]], id="legacy-wildcard-ends-with-names"),
        pytest.param([["*"], ["*", "zzz"]], [["a", "b"], ["a", "b"]], id="explicit-wildcard"),
        pytest.param([["a"], ["a", "b"], []], [["a"], ["a", "b"], []], id="names-then-none"),
        pytest.param([["missing"]], [[]], id="absent-names-not-included"),
    ],
)
def test_sotw_cluster_subscriptions(
    server: AdsServer, sotw: RawAdsStream, requests: list[list[str]], expected: list[list[str]]
) -> None:
    server.set_resources(CLUSTER_TYPE, {"a": cluster("a"), "b": cluster("b")})
    nonce = ""
    got = []
    for i, subscription in enumerate(requests):
        sotw.request(CLUSTER_TYPE, subscription, nonce=nonce, node=make_node() if i == 0 else None)
        response = sotw.recv()
        nonce = response.nonce
        got.append(names(response))
    assert got == expected


def test_delta_unsubscribe_and_resubscribe(server: AdsServer, delta: RawAdsStream) -> None:
    server.set_resources(ENDPOINT_TYPE, {"a": cla("a"), "b": cla("b")})
    delta.delta_request(ENDPOINT_TYPE, ["a", "b"], node=make_node())
    r1 = delta.recv()
    assert sorted(r.name for r in r1.resources) == ["a", "b"]
    delta.delta_request(ENDPOINT_TYPE, unsubscribe=["b"], nonce=r1.nonce)
    server.set_resource(ENDPOINT_TYPE, "b", cla("b-changed"))  # no longer subscribed: no push
    delta.delta_request(ENDPOINT_TYPE, ["b"])
    r2 = delta.recv()  # resubscribing sends it again
    assert [r.name for r in r2.resources] == ["b"]
    assert list(r2.removed_resources) == []
