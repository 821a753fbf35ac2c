"""Effective timeouts: the gRFC A31 table and Envoy's HTTP route timeout."""

from __future__ import annotations

import pytest

from proxyless.resources.model import RouteAction
from proxyless.routing import grpc_deadline, http_timeout

A31 = [
    # caller, grpc_timeout_header_max, route max_stream_duration, listener msd, effective, source
    pytest.param(None, None, None, None, None, "no deadline", id="all-unset"),
    pytest.param(None, None, 0.0, None, None, "no deadline", id="msd-zero"),
    pytest.param(None, None, 10.0, None, 10.0, "route max_stream_duration 10s", id="msd-10"),
    pytest.param(None, 0.0, 10.0, None, None, "no deadline", id="header-max-zero"),
    pytest.param(
        None, 10.0, 5.0, None, 10.0, "route grpc_timeout_header_max 10s", id="header-max-10"
    ),
    pytest.param(20.0, None, None, None, 20.0, "caller deadline 20s", id="caller-only"),
    pytest.param(20.0, None, 0.0, None, 20.0, "caller deadline 20s", id="caller-msd-zero"),
    pytest.param(20.0, None, 10.0, None, 10.0, "route max_stream_duration 10s", id="caller-msd-10"),
    pytest.param(20.0, 0.0, 10.0, None, 20.0, "caller deadline 20s", id="caller-header-max-0"),
    pytest.param(
        20.0, 10.0, None, None, 10.0, "route grpc_timeout_header_max 10s", id="caller-header-max-10"
    ),
    pytest.param(1.5, 2.0, None, None, 1.5, "caller deadline 1.5s", id="caller-shorter"),
    pytest.param(None, None, None, 7.0, 7.0, "listener max_stream_duration 7s", id="listener-msd"),
    pytest.param(
        None, None, 3.0, 7.0, 3.0, "route max_stream_duration 3s", id="route-overrides-listener"
    ),
    pytest.param(None, None, 0.0, 7.0, None, "no deadline", id="route-zero-overrides-listener"),
    pytest.param(
        None, 2.0, None, 7.0, 2.0, "route grpc_timeout_header_max 2s", id="header-max-over-listener"
    ),
]


@pytest.mark.parametrize(
    ("caller", "header_max", "route_msd", "listener_msd", "effective", "source"), A31
)
def test_grpc_deadline(
    caller: float | None,
    header_max: float | None,
    route_msd: float | None,
    listener_msd: float | None,
    effective: float | None,
    source: str,
) -> None:
    action = RouteAction(
        cluster="c", grpc_timeout_header_max=header_max, max_stream_duration=route_msd
    )
    got, why = grpc_deadline(action, listener_msd, caller)
    assert got == effective
    assert why.startswith(source)


@pytest.mark.parametrize(
    ("route_timeout", "caller", "effective", "source"),
    [
        pytest.param(None, None, 15.0, "route timeout (default) 15s", id="default-15s"),
        pytest.param(None, 3.0, 3.0, "caller timeout 3s", id="caller-shorter-than-default"),
        pytest.param(None, 30.0, 15.0, "route timeout (default) 15s", id="default-caps-caller"),
        pytest.param(0.0, None, None, "no timeout", id="zero-disables"),
        pytest.param(0.0, 30.0, 30.0, "caller timeout 30s", id="zero-keeps-caller"),
        pytest.param(2.5, 10.0, 2.5, "route timeout 2.5s", id="route-caps"),
    ],
)
def test_http_timeout(
    route_timeout: float | None, caller: float | None, effective: float | None, source: str
) -> None:
    got, why = http_timeout(RouteAction(cluster="c", timeout=route_timeout), caller)
    assert got == effective
    assert why.startswith(source)
