"""The generic xDS client against a real ADS server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

from google.protobuf import json_format
from tests.e2e.xds_client.conftest import (
    CLUSTER_URL,
    TEST_CLUSTER,
    Recorder,
    cluster,
    make_bootstrap,
    wait_until,
)

from proxyless.controlplane.server import AdsServer
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist, ResourceNacked
from proxyless.xds_client import ClientStatus


def _status(client, name):
    return next(s for s in client.dump() if s.name == name)


def test_valid_resource_used_and_invalid_sibling_nacked_keeping_last_good(ads, make_client):
    client, _ = make_client(make_bootstrap(ads.target))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a1"), "b": cluster("b", "b1")})
    wa, wb = Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", wb)
    wa.wait("changed", lambda v: v == "a1")
    wb.wait("changed", lambda v: v == "b1")

    # One response: a valid update of "a", an invalid "b".
    since = len(ads.requests)
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a2"), "b": cluster("b", bad=True)})
    wa.wait("changed", lambda v: v == "a2")
    err = wb.wait("ambient_error")
    assert isinstance(err, ResourceNacked)
    assert "STRICT_DNS" in str(err) and "still using version '1'" in str(err)
    nack = ads.wait_for(lambda r: r.is_nack, since=since)
    assert "b: type: STRICT_DNS is not supported" in nack.error_detail.message
    assert "a:" not in nack.error_detail.message
    assert nack.version_info == "1"  # the NACK carries the last accepted version
    assert "resource_error" not in wb.kinds()

    sb = _status(client, "b")
    assert sb.status is ClientStatus.NACKED and sb.cached and sb.version == "1"
    assert sb.nacked_but_cached and sb.error_version == "2"
    assert _status(client, "a").status is ClientStatus.ACKED


def test_invalid_resource_never_cached_is_a_resource_error(ads, make_client):
    client, _ = make_client(make_bootstrap(ads.target))
    ads.set_resources(CLUSTER_URL, {"b": cluster("b", bad=True)})
    w = Recorder()
    client.watch(TEST_CLUSTER, "b", w)
    err = w.wait("resource_error")
    assert isinstance(err, ResourceNacked) and "STRICT_DNS" in str(err)
    assert _status(client, "b").status is ClientStatus.NACKED


def test_undecodable_protobuf_is_nacked_with_a_reason(ads, make_client):
    client, _ = make_client(make_bootstrap(ads.target))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a1"), "junk": b"\xff\xff\xff\x0f"})
    w = Recorder()
    client.watch(TEST_CLUSTER, "a", w)
    client.watch(TEST_CLUSTER, "junk", Recorder())
    w.wait("changed")
    nack = ads.wait_for(lambda r: r.is_nack)
    assert "could not decode Cluster" in nack.error_detail.message


def test_server_restart_keeps_resources_and_resubscribes(make_client):
    server = AdsServer()
    port = server.start()
    server.set_resources(CLUSTER_URL, {"a": cluster("a", "a1")})
    client, clock = make_client(make_bootstrap(server.target))
    w = Recorder()
    client.watch(TEST_CLUSTER, "a", w)
    w.wait("changed")
    server.stop()
    err = w.wait("ambient_error")
    assert isinstance(err, ControlPlaneUnreachable)
    assert _status(client, "a").status is ClientStatus.ACKED
    assert _status(client, "a").cached

    restarted = AdsServer(port=port)
    restarted.start()
    try:
        restarted.set_resources(CLUSTER_URL, {"a": cluster("a", "a1")})
        # The reconnect waits for the backoff timer (1 s +-20%) on the fake clock.
        # Move the fake clock a second at a time, in step with the real channel.
        for _ in range(100):
            if restarted.requests:
                break
            clock.advance(1.0)
            time.sleep(0.1)
        req = restarted.wait_for(lambda r: r.type_url == CLUSTER_URL)
        assert req.resource_names == ("a",)
        assert req.version_info == "1"  # resubscribed with what is cached
        restarted.wait_for(lambda r: r.response_nonce != "")  # ACK on the new stream
        assert "resource_error" not in w.kinds()
        assert _status(client, "a").status is ClientStatus.ACKED
    finally:
        restarted.stop()


def test_does_not_exist_after_15s_on_a_connected_stream(ads, make_client):
    client, clock = make_client(make_bootstrap(ads.target))
    w = Recorder()
    client.watch(TEST_CLUSTER, "missing", w)
    ads.wait_for(lambda r: "missing" in r.resource_names)
    wait_until(lambda: clock.pending() == 1, what="does-not-exist timer")
    clock.advance(14.9)
    assert w.kinds() == []
    assert _status(client, "missing").status is ClientStatus.REQUESTED
    clock.advance(0.2)
    err = w.wait("resource_error")
    assert isinstance(err, ResourceDoesNotExist)
    assert "'missing'" in str(err) and "test-node" in str(err)
    assert _status(client, "missing").status is ClientStatus.DOES_NOT_EXIST


def test_watches_share_one_stream_and_unsubscribe(ads, make_client):
    client, _ = make_client(make_bootstrap(ads.target))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b")})
    wa, wb, wb2 = Recorder(), Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    cancel_b = client.watch(TEST_CLUSTER, "b", wb)
    cancel_b2 = client.watch(TEST_CLUSTER, "b", wb2)
    for w in (wa, wb, wb2):
        w.wait("changed")
    assert ads.streams_opened == 1
    cancel_b()
    cancel_b2()
    ads.wait_for(lambda r: r.resource_names == ("a",))
    assert [s.name for s in client.dump()] == ["a"]
    assert ads.streams_opened == 1


def test_node_arrives_exactly_as_written(ads, make_client):
    node = {
        "id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
        "cluster": "reviews",
        "locality": {"region": "r1", "zone": "z1", "sub_zone": "s1"},
        "metadata": {
            "GENERATOR": "grpc",
            "LABELS": {"app": "reviews", "version": "v1"},
            "INSTANCE_IPS": "10.0.0.1",
            "nested": {"list": [1, "two", True, None], "n": 2.5},
        },
    }
    client, _ = make_client(make_bootstrap(ads.target, node=node))
    client.watch(TEST_CLUSTER, "a", Recorder())
    req = ads.wait_for(lambda r: r.type_url == CLUSTER_URL)
    got = req.node
    assert got.id == node["id"] and got.cluster == "reviews"
    assert (got.locality.region, got.locality.zone, got.locality.sub_zone) == ("r1", "z1", "s1")
    assert json_format.MessageToDict(got.metadata) == node["metadata"]
    assert got.user_agent_name == "proxyless"
    assert "xds.config.resource-in-sotw" in got.client_features


def test_cds_deletion_is_a_resource_error(ads, make_client):
    client, _ = make_client(make_bootstrap(ads.target))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b")})
    wa = Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", Recorder())
    wa.wait("changed")
    ads.set_resources(CLUSTER_URL, {"b": cluster("b")})
    err = wa.wait("resource_error")
    assert isinstance(err, ResourceDoesNotExist)
    assert _status(client, "a").status is ClientStatus.DOES_NOT_EXIST


def test_ignore_resource_deletion_keeps_the_resource(ads, make_client, caplog):
    client, _ = make_client(
        make_bootstrap(ads.target, features=("xds_v3", "ignore_resource_deletion"))
    )
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b", "b1")})
    wa, wb = Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", wb)
    wa.wait("changed")
    since = len(ads.requests)
    with caplog.at_level("WARNING", logger="proxyless.xds_client"):
        ads.set_resources(CLUSTER_URL, {"b": cluster("b", "b2")})
        wb.wait("changed", lambda v: v == "b2")
        ads.wait_for(lambda r: r.version_info == "2", since=since)
    assert "resource_error" not in wa.kinds()
    assert _status(client, "a").cached
    assert any("ignore_resource_deletion" in r.getMessage() for r in caplog.records)


def test_unreachable_server_says_not_connected(make_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client, _ = make_client(make_bootstrap(f"127.0.0.1:{port}"))
    w = Recorder()
    client.watch(TEST_CLUSTER, "a", w)
    err = w.wait("resource_error", timeout=10)
    assert isinstance(err, ControlPlaneUnreachable)
    assert f"127.0.0.1:{port} unreachable" in str(err)
    st = _status(client, "a")
    assert st.status is ClientStatus.REQUESTED and "unreachable" in (st.error or "")
    assert client.server_states()[0]["connected"] is False


def test_an_outage_logs_one_line_per_attempt_not_per_resource(make_client, caplog):
    """A stream failure is one warning naming the server and how many
    resources are served from cache, however many resources are watched."""
    server = AdsServer()
    server.start()
    names = [f"c{i}" for i in range(7)]
    server.set_resources(CLUSTER_URL, {n: cluster(n, f"{n}1") for n in names})
    client, _ = make_client(make_bootstrap(server.target))
    recorders = {n: Recorder() for n in names}
    for n, w in recorders.items():
        client.watch(TEST_CLUSTER, n, w)
    for w in recorders.values():
        w.wait("changed")
    with caplog.at_level("DEBUG", logger="proxyless"):
        server.stop()
        for w in recorders.values():
            w.wait("ambient_error")
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and r.name.startswith("proxyless")
    ]
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0]
    assert "(7 of 7 resources served from cache)" in warnings[0]


def test_a_closed_mesh_gives_back_its_loop_and_says_it_is_closed(ads):
    """Mesh.close() closes its event loop (no file descriptors left behind),
    and reading a closed Mesh's xDS state fails at once, saying why."""
    import gc
    import os

    import pytest

    from proxyless.mesh import Mesh

    bootstrap = make_bootstrap(ads.target)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    Mesh(bootstrap).close()
    gc.collect()
    before = open_fds()
    for _ in range(10):
        mesh = Mesh(bootstrap)
        mesh.close()
    gc.collect()
    assert open_fds() - before <= 0
    assert mesh.loop.is_closed()
    with pytest.raises(RuntimeError, match="Mesh was closed"):
        mesh.xds_client.dump()
    mesh.close()  # idempotent
