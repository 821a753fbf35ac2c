"""A stream's SotW and Delta subscription rules, without a server or sockets."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from proxyless.controlplane.ads_stream import AdsStream, View, encode
from proxyless.controlplane.model import CLUSTER_TYPE, ENDPOINT_TYPE


def nonces() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: str(next(counter))


def clusters(*names: str, timeout_s: int = 1) -> View:
    out = {}
    for name in names:
        c = cluster_pb2.Cluster(name=name)
        c.connect_timeout.seconds = timeout_s
        out[name] = encode(CLUSTER_TYPE, c)
    return {CLUSTER_TYPE: out}


def assignments(*names: str) -> View:
    return {
        ENDPOINT_TYPE: {
            n: encode(ENDPOINT_TYPE, endpoint_pb2.ClusterLoadAssignment(cluster_name=n))
            for n in names
        }
    }


def sotw(type_url: str, *names: str, nonce: str = "") -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce
    )


def test_encode_versions_by_content() -> None:
    a = clusters("a")[CLUSTER_TYPE]["a"]
    assert a.version == clusters("a")[CLUSTER_TYPE]["a"].version
    assert a.version != clusters("a", timeout_s=2)[CLUSTER_TYPE]["a"].version


def test_sotw_first_request_legacy_wildcard_then_ack_gets_no_reply() -> None:
    stream = AdsStream(1, delta=False)
    stream.view = clusters("a", "b")
    next_nonce = nonces()
    reply = stream.on_sotw(sotw(CLUSTER_TYPE), "3", next_nonce)
    assert reply is not None
    assert reply.record.resource_names == ("a", "b")
    assert reply.record.version_info == "3"
    assert reply.record.nonce == "1"
    assert stream.sotw[CLUSTER_TYPE].legacy_wildcard
    assert stream.on_sotw(sotw(CLUSTER_TYPE, nonce="1"), "3", next_nonce) is None


def test_sotw_stale_nonce_is_ignored_and_new_names_are_answered() -> None:
    stream = AdsStream(1, delta=False)
    stream.view = assignments("a", "b")
    next_nonce = nonces()
    assert stream.on_sotw(sotw(ENDPOINT_TYPE, "a"), "1", next_nonce) is not None
    assert stream.on_sotw(sotw(ENDPOINT_TYPE, "a", "b", nonce="0"), "1", next_nonce) is None
    reply = stream.on_sotw(sotw(ENDPOINT_TYPE, "a", "b", nonce="1"), "1", next_nonce)
    assert reply is not None
    assert reply.record.resource_names == ("a", "b")


def test_sotw_push_resends_clusters_on_removal_but_not_assignments() -> None:
    stream = AdsStream(1, delta=False)
    stream.view = {**clusters("a", "b"), **assignments("a", "b")}
    next_nonce = nonces()
    stream.on_sotw(sotw(CLUSTER_TYPE, "*"), "1", next_nonce)
    stream.on_sotw(sotw(ENDPOINT_TYPE, "a", "b"), "1", next_nonce)
    stream.view = {**clusters("a"), **assignments("a")}
    reply = stream.push(CLUSTER_TYPE, "2", next_nonce)
    assert reply is not None
    assert reply.record.resource_names == ("a",)
    assert stream.push(ENDPOINT_TYPE, "2", next_nonce) is None


def test_delta_missing_subscription_is_reported_removed() -> None:
    stream = AdsStream(1, delta=True)
    stream.view = assignments("a")
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT_TYPE, resource_names_subscribe=["a", "missing"]
    )
    reply = stream.on_delta(request, "1", nonces())
    assert reply is not None
    assert reply.record.resource_names == ("a",)
    assert reply.record.removed_resources == ("missing",)
    assert reply.record.delta


def test_delta_known_version_is_not_resent_but_the_first_request_is_answered() -> None:
    stream = AdsStream(1, delta=True)
    stream.view = assignments("a")
    known = {"a": stream.view[ENDPOINT_TYPE]["a"].version}
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT_TYPE, resource_names_subscribe=["a"], initial_resource_versions=known
    )
    next_nonce = nonces()
    reply = stream.on_delta(request, "1", next_nonce)
    assert reply is not None
    assert (reply.record.resource_names, reply.record.removed_resources) == ((), ())
    assert stream.push(ENDPOINT_TYPE, "1", next_nonce) is None
