"""Call metrics, access logs and response flags match what happened."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from tests.e2e.httpx.conftest import retry_policy

import proxyless.grpc
from proxyless.mesh import Mesh
from proxyless.observability import settings
from proxyless.testing.backends import ECHO_METHOD, EchoServer

from .conftest import Chain, Otel, Publisher

pytestmark = pytest.mark.timeout(60)


def _sum(points: list[Any], **attrs: Any) -> float:
    total = 0.0
    for p in points:
        if all(p.attributes.get(k) == v for k, v in attrs.items()):
            total += getattr(p, "value", None) or getattr(p, "count", 0)
    return total


def test_call_metrics_count_calls_attempts_and_retries(
    otel: Otel, chain: Callable[..., Chain]
) -> None:
    n, m = 5, 2
    c = chain(retry_policy=retry_policy("5xx", num_retries=2))
    c.b.fail_next(m, 503)
    for _ in range(n):
        c.call()
    got = otel.metrics()
    method = "test.A/Call"
    assert _sum(got["grpc.client.attempt.started"], **{"grpc.method": method}) == n
    assert _sum(got["grpc.client.attempt.duration"], **{"grpc.status": "OK"}) == n
    assert _sum(got["grpc.client.call.duration"], **{"grpc.status": "OK"}) == n
    assert _sum(got["grpc.server.call.started"], **{"grpc.method": method}) == n
    assert _sum(got["grpc.server.call.duration"], **{"grpc.status": "OK"}) == n
    requests = got["http.client.request.duration"]
    assert _sum(requests) == n + m
    assert _sum(requests, **{"http.response.status_code": 503}) == m
    assert _sum(got["proxyless.http.client.call.duration"]) == n
    assert _sum(got["proxyless.retries"], **{"proxyless.retry.reason": "error_status"}) == m
    (target,) = {p.attributes["grpc.target"] for p in got["grpc.client.call.duration"]}
    assert target == "xds:///a.test:80"
    backends = {
        p.attributes.get("grpc.lb.backend_service") for p in got["grpc.client.attempt.duration"]
    }
    assert backends == {"a.test:80-cluster"}


def test_access_log_lines_share_the_request_and_trace_ids(
    otel: Otel, chain: Callable[..., Chain], caplog: pytest.LogCaptureFixture
) -> None:
    settings.configure(access_log=True)
    c = chain(retry_policy=retry_policy("5xx", num_retries=1))
    c.b.fail_next(1, 503)
    with caplog.at_level(logging.INFO, logger="proxyless.access"):
        c.call()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "proxyless.access"]
    grpc_line = next(x for x in lines if x["protocol"] == "grpc")
    http_line = next(x for x in lines if x["protocol"] == "http")
    assert grpc_line["path"] == "/test.A/Call" and grpc_line["status"] == "OK"
    assert grpc_line["upstream_cluster"] == "a.test:80-cluster"
    assert grpc_line["upstream_host"] == f"127.0.0.1:{c.a_port}"
    assert http_line["method"] == "GET" and http_line["path"] == "/hop"
    assert http_line["status"] == 200 and http_line["attempts"] == 2
    assert http_line["upstream_host"] == c.b.address
    assert grpc_line["request_id"] == http_line["request_id"] != "-"
    assert grpc_line["trace_id"] == http_line["trace_id"] != "-"
    assert grpc_line["response_flags"] == http_line["response_flags"] == "-"


def test_access_log_sampling_and_off_by_default(
    otel: Otel, chain: Callable[..., Chain], caplog: pytest.LogCaptureFixture
) -> None:
    c = chain()
    with caplog.at_level(logging.INFO, logger="proxyless.access"):
        c.call()
        assert not [r for r in caplog.records if r.name == "proxyless.access"]
        settings.configure(access_log=True, access_log_sample=0.0)
        c.call()
        assert not [r for r in caplog.records if r.name == "proxyless.access"]
    settings.configure(access_log_sample=1.0)


def _refusing_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()  # nothing listens: connections are refused
    return port


def test_a_connect_failure_carries_uf_and_urx_in_the_error_the_span_and_the_log(
    otel: Otel, mesh: Mesh, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    settings.configure(access_log=True)
    dead = f"127.0.0.1:{_refusing_port()}"
    rp = retry_policy("unavailable", num_retries=1)
    publisher.service("dead.test:80", [dead], retry_policy=rp)
    ch = proxyless.grpc.channel("xds:///dead.test:80", mesh=mesh)
    with caplog.at_level(logging.INFO, logger="proxyless.access"):
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/test.Dead/Call")(b"x", timeout=5)
    err = info.value
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    details = err.details()
    assert "upstream connect failure" in details and dead in details
    assert details.endswith("[UF,URX]")
    assert ("x-proxyless-flag", "UF,URX") in err.trailing_metadata()
    (sent,) = otel.named("Sent.test.Dead/Call")
    assert sent.attributes["proxyless.response_flags"] == "UF,URX"
    assert [
        s.attributes["proxyless.response_flags"] for s in otel.named("Attempt.test.Dead/Call")
    ] == ["UF", "UF"]
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "proxyless.access"]
    assert line["response_flags"] == "UF,URX" and line["status"] == "UNAVAILABLE"
    assert line["attempts"] == 2
    ch.close()


def test_no_route_carries_nr(otel: Otel, mesh: Mesh, publisher: Publisher) -> None:
    from proxyless.testing.resources import LISTENER_URL, ROUTE_URL, listener, route, route_config

    publisher.service("nr.test:80", [f"127.0.0.1:{_refusing_port()}"])
    only = [route(path="/only", cluster="nr.test:80-cluster")]
    publisher.ads.set_resource(
        ROUTE_URL, "nr-routes", route_config("nr-routes", ["nr.test:80"], only)
    )
    publisher.ads.set_resource(LISTENER_URL, "nr.test:80", listener("nr.test:80", "nr-routes"))
    ch = proxyless.grpc.channel("xds:///nr.test:80", mesh=mesh)
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary("/test.Other/Call")(b"x", timeout=5)
    assert info.value.details().endswith("[NR]")
    (sent,) = otel.named("Sent.test.Other/Call")
    assert sent.attributes["proxyless.response_flags"] == "NR"
    ch.close()


def test_a_route_max_stream_duration_carries_umsdr(
    otel: Otel, mesh: Mesh, publisher: Publisher, backends: Callable[..., list[EchoServer]]
) -> None:
    (slow,) = backends("slow")
    slow.delay = 1.0
    publisher.service("capped.test:80", [slow.address], max_stream_duration=0.05)
    ch = proxyless.grpc.channel("xds:///capped.test:80", mesh=mesh)
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(ECHO_METHOD)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "max stream duration reached" in info.value.details()
    assert info.value.details().endswith("[UMSDR]")
    ch.close()
