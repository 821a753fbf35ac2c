"""The xDS client's behaviour, the same over State of the World and delta xDS
(chosen by the ``delta_xds`` server feature), against the real ADS server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from tests.e2e.xds_client.conftest import (
    CLUSTER_URL,
    TEST_CLUSTER,
    Recorder,
    cluster,
    make_bootstrap,
    wait_until,
)

from proxyless.bootstrap import Bootstrap
from proxyless.controlplane.server import AdsServer
from proxyless.errors import ControlPlaneUnreachable, ResourceDoesNotExist, ResourceNacked
from proxyless.xds_client import ClientStatus, XdsClient

MODES = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]


@pytest.fixture(params=MODES)
def delta(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


def boot(target: str, delta: bool, *extra: str) -> Bootstrap:
    features = ("xds_v3", "delta_xds", *extra) if delta else ("xds_v3", *extra)
    return make_bootstrap(target, features=features)


def status(client: XdsClient, name: str) -> ClientStatus:
    return next(s for s in client.dump() if s.name == name).status


def test_requests_use_the_chosen_protocol(ads: AdsServer, make_client: Callable, delta: bool):
    client, _ = make_client(boot(ads.target, delta))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a1")})
    w = Recorder()
    client.watch(TEST_CLUSTER, "a", w)
    w.wait("changed", lambda v: v == "a1")
    first = ads.wait_for(lambda r: r.type_url == CLUSTER_URL)
    assert first.delta is delta and first.resource_names == ("a",)
    assert first.node.id == "test-node"
    ack = ads.wait_for(lambda r: r.response_nonce != "")
    assert ack.delta is delta and not ack.is_nack
    assert all(r.delta is delta for r in ads.responses)


def test_update_and_nack_keep_the_last_good_value(
    ads: AdsServer, make_client: Callable, delta: bool
):
    client, _ = make_client(boot(ads.target, delta))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a1"), "b": cluster("b", "b1")})
    wa, wb = Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", wb)
    wa.wait("changed", lambda v: v == "a1")
    wb.wait("changed", lambda v: v == "b1")
    since = len(ads.requests)
    ads.set_resources(CLUSTER_URL, {"a": cluster("a", "a2"), "b": cluster("b", bad=True)})
    wa.wait("changed", lambda v: v == "a2")
    err = wb.wait("ambient_error")
    assert isinstance(err, ResourceNacked) and "STRICT_DNS" in str(err)
    nack = ads.wait_for(lambda r: r.is_nack, since=since)
    assert nack.delta is delta
    assert "b: type: STRICT_DNS is not supported" in nack.error_detail.message
    assert "resource_error" not in wb.kinds()
    assert status(client, "b") is ClientStatus.NACKED
    assert status(client, "a") is ClientStatus.ACKED


def test_invalid_never_cached_is_a_resource_error(
    ads: AdsServer, make_client: Callable, delta: bool
):
    client, _ = make_client(boot(ads.target, delta))
    ads.set_resources(CLUSTER_URL, {"b": cluster("b", bad=True)})
    w = Recorder()
    client.watch(TEST_CLUSTER, "b", w)
    assert isinstance(w.wait("resource_error"), ResourceNacked)


def test_removed_resource_is_a_resource_error(ads: AdsServer, make_client: Callable, delta: bool):
    client, _ = make_client(boot(ads.target, delta))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b")})
    wa = Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", Recorder())
    wa.wait("changed")
    ads.set_resources(CLUSTER_URL, {"b": cluster("b")})
    assert isinstance(wa.wait("resource_error"), ResourceDoesNotExist)
    assert status(client, "a") is ClientStatus.DOES_NOT_EXIST
    if delta:
        assert any(r.removed_resources == ("a",) for r in ads.responses)


def test_ignore_resource_deletion_keeps_the_resource(
    ads: AdsServer, make_client: Callable, delta: bool
):
    client, _ = make_client(boot(ads.target, delta, "ignore_resource_deletion"))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b", "b1")})
    wa, wb = Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    client.watch(TEST_CLUSTER, "b", wb)
    wa.wait("changed")
    ads.set_resources(CLUSTER_URL, {"b": cluster("b", "b2")})
    wb.wait("changed", lambda v: v == "b2")
    nonce = ads.responses[-1].nonce
    ads.wait_for(lambda r: r.response_nonce == nonce)  # the response was handled
    assert "resource_error" not in wa.kinds()
    assert status(client, "a") is ClientStatus.ACKED


def test_missing_resource_does_not_exist(ads: AdsServer, make_client: Callable, delta: bool):
    client, clock = make_client(boot(ads.target, delta))
    w = Recorder()
    client.watch(TEST_CLUSTER, "missing", w)
    ads.wait_for(lambda r: "missing" in r.resource_names)
    if not delta:  # SotW learns it from the 15 s timer; delta from removed_resources
        wait_until(lambda: clock.pending() == 1, what="does-not-exist timer")
        clock.advance(15.1)
    assert isinstance(w.wait("resource_error"), ResourceDoesNotExist)
    assert status(client, "missing") is ClientStatus.DOES_NOT_EXIST


def test_unsubscribe_on_the_shared_stream(ads: AdsServer, make_client: Callable, delta: bool):
    client, _ = make_client(boot(ads.target, delta))
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": cluster("b")})
    wa, wb = Recorder(), Recorder()
    client.watch(TEST_CLUSTER, "a", wa)
    cancel = client.watch(TEST_CLUSTER, "b", wb)
    wa.wait("changed")
    wb.wait("changed")
    cancel()
    if delta:
        ads.wait_for(lambda r: r.resource_names_unsubscribe == ("b",))
    else:
        ads.wait_for(lambda r: r.resource_names == ("a",))
    assert [s.name for s in client.dump()] == ["a"]
    assert ads.streams_opened == 1


def test_restart_resubscribes_with_what_is_cached(make_client: Callable, delta: bool):
    server = AdsServer()
    port = server.start()
    server.set_resources(CLUSTER_URL, {"a": cluster("a", "a1")})
    client, clock = make_client(boot(server.target, delta))
    w = Recorder()
    client.watch(TEST_CLUSTER, "a", w)
    w.wait("changed")
    server.stop()
    assert isinstance(w.wait("ambient_error"), ControlPlaneUnreachable)
    restarted = AdsServer(port=port)
    restarted.start()
    try:
        restarted.set_resources(CLUSTER_URL, {"a": cluster("a", "a1")})
        for _ in range(100):  # the backoff timer runs on the fake clock
            if restarted.requests:
                break
            clock.advance(1.0)
            time.sleep(0.1)
        req = restarted.wait_for(lambda r: r.type_url == CLUSTER_URL)
        assert req.resource_names == ("a",)
        if delta:
            assert dict(req.initial_resource_versions) == {"a": client.dump()[0].version}
        else:
            assert req.version_info == "1"
        assert "resource_error" not in w.kinds()
        assert status(client, "a") is ClientStatus.ACKED
    finally:
        restarted.stop()
