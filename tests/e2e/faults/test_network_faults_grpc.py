"""Network faults on one endpoint of a gRPC cluster, through the sync and aio channels.

Cluster ``c`` has a good endpoint and one behind a
:class:`~proxyless.testing.faultproxy.FaultProxy` (or a
:class:`~proxyless.testing.faultproxy.BlackHole`). The route retries on
``connect-failure,reset,unavailable`` (2 retries, 300 ms per try, gRFC A44
and Envoy's ``RetryPolicy``) and the cluster's ``connect_timeout`` is
250 ms. Each test states its figure: calls failed out of N (20 in CI, 300
with ``PROXYLESS_LONG=1``), and for a fault that clears, a generous bound
on the time until the endpoint serves again. No test asserts that a call
was fast.

A silent endpoint (accepts and never answers, or never completes the
connect) costs no call: the pickers skip endpoints whose connection is not
READY while another is (docs/load-balancing.md), and a per-try timeout is
retried under ``reset`` (docs/resilience.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from tests.e2e.conftest import TARGET, backend_of, wait_until
from tests.e2e.faults.conftest import (
    NUM_RETRIES,
    RETRY_ON,
    Figures,
    calls,
    fault_cluster,
    fault_retries,
    publish_faulty,
    run_calls,
    wait_served,
)
from tests.e2e.resilience.conftest import Service, outlier_detection, retry_policy

import proxyless.grpc.aio
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer
from proxyless.testing.faultproxy import BlackHole, Fault, FaultProxy

Backends = Callable[..., list[EchoServer]]
Proxies = Callable[..., FaultProxy]
Echo = Callable[..., bytes]

pytestmark = pytest.mark.leak_strict

#: faults a retry on another endpoint absorbs: the connection fails fast or
#: the reply comes within the per-try timeout
FAST_FAULTS = [
    pytest.param(Fault.reset(0), id="reset-at-connect"),
    pytest.param(Fault.reset(200), id="reset-mid-reply"),
    pytest.param(Fault.half_close(), id="half-close"),
    pytest.param(Fault.slow(2_000), id="slow-2kBps"),
]


def _silent(kind: str, proxy: Proxies, bad: EchoServer, hole: BlackHole) -> str:
    return hole.address if kind == "black-hole" else proxy(bad.address, Fault.hold()).address


@pytest.mark.parametrize("fault", FAST_FAULTS)
def test_fast_failing_or_slow_endpoint_costs_no_call(
    fault: Fault, service: Service, backends: Backends, echo: Echo, fault_proxy: Proxies
) -> None:
    good, bad = backends("good", "bad")
    proxy = fault_proxy(bad.address, fault)
    publish_faulty(service, [good.address, proxy.address])
    wait_served(echo, [good])

    fig = run_calls(echo, calls(10 if fault.kind.value == "slow" else 20))

    print(f"grpc sync {fault.kind.value}: {fig}")
    assert not fig.failed, fig.errors[:3]
    if fault.kind.value == "slow":
        assert fig.served["bad"] > 0  # slower, not broken: it keeps its share
    else:
        assert fig.served == Counter(good=fig.calls)
        assert proxy.accepted >= 1  # the fault was met, not avoided by chance


@pytest.mark.parametrize("kind", ["hold", "black-hole"])
def test_silent_endpoint_fails_only_calls_that_picked_it(
    kind: str,
    service: Service,
    backends: Backends,
    echo: Echo,
    fault_proxy: Proxies,
    black_hole: BlackHole,
) -> None:
    """What holds before and after READY-aware picking: the good endpoint
    serves every call that succeeds, a failure is the per-try timeout (at
    most one call in two, round robin), never anything slower."""
    good, bad = backends("good", "bad")
    publish_faulty(service, [good.address, _silent(kind, fault_proxy, bad, black_hole)])
    wait_served(echo, [good])

    fig = run_calls(echo, calls(6))

    print(f"grpc sync {kind}: {fig}")
    assert set(fig.served) <= {"good"}
    assert set(fig.failed) <= {"DEADLINE_EXCEEDED"}
    assert sum(fig.failed.values()) <= (fig.calls + 1) // 2


def test_silent_endpoint_costs_no_call(
    service: Service, backends: Backends, echo: Echo, fault_proxy: Proxies
) -> None:
    """The issue's three-endpoint case in small: an endpoint that accepts
    TCP and never answers must not cost a call (the black-holed connect is
    the next test)."""
    good, bad = backends("good", "bad")
    publish_faulty(service, [good.address, fault_proxy(bad.address, Fault.hold()).address])
    wait_served(echo, [good])

    fig = run_calls(echo, calls(6))

    assert not fig.failed, str(fig)


def test_connect_timeout_moves_the_call_on_without_a_per_try_timeout(
    service: Service, backends: Backends, echo: Echo, black_hole: BlackHole
) -> None:
    """Envoy: a connect that exceeds the cluster's ``connect_timeout`` is a
    connect failure, retried under ``connect-failure``; the caller's 1 s
    deadline is four times the 250 ms connect timeout."""
    (good,) = backends("good")
    publish_faulty(
        service, [good.address, black_hole.address], retry_policy=fault_retries(per_try=None)
    )
    wait_until(lambda: run_calls(echo, 1, timeout=1.0).served["good"] > 0, what="a first call")

    fig = run_calls(echo, 2, timeout=1.0)

    assert not fig.failed, str(fig)


@pytest.mark.parametrize("kind", ["hold", "black-hole"])
def test_outlier_detection_ejects_a_silent_endpoint(
    kind: str,
    service: Service,
    backends: Backends,
    echo: Echo,
    fault_proxy: Proxies,
    black_hole: BlackHole,
) -> None:
    """With ``consecutive_5xx`` 3 the silent endpoint costs at most 3 calls
    (a per-try timeout counts as a gateway failure), then none."""
    good, bad = backends("good", "bad")
    od = outlier_detection(consecutive_5xx=3, interval=1.0, base_ejection_time=30.0)
    publish_faulty(
        service,
        [good.address, _silent(kind, fault_proxy, bad, black_hole)],
        cluster_proto=fault_cluster(outlier=od),
    )
    wait_served(echo, [good])

    first = run_calls(echo, 10)
    after = run_calls(echo, calls(10))

    print(f"grpc sync {kind} + outlier detection: {first} / then {after}")
    assert sum(first.failed.values()) <= 3
    assert not after.failed and after.served == Counter(good=after.calls)


@pytest.mark.parametrize(
    ("max_retries", "expected_failed"),
    [
        pytest.param(None, 2, id="default-max-retries-3"),
        pytest.param(10, 0, id="max-retries-10"),
    ],
)
def test_reset_of_calls_in_flight_spares_the_other_endpoint(
    max_retries: int | None,
    expected_failed: int,
    service: Service,
    backends: Backends,
    echo: Echo,
    fault_proxy: Proxies,
) -> None:
    """Ten calls in flight, five on each endpoint; ``b``'s connection is reset.
    The five on ``a`` all succeed; the five on ``b`` are retried on ``a``, as
    many at once as the cluster's ``max_retries`` allows (Envoy's default is
    3, so 2 fail with the retry limit named)."""
    a, b = backends("a", "b")
    pa, pb = fault_proxy(a.address), fault_proxy(b.address)
    policy = retry_policy(RETRY_ON, NUM_RETRIES, per_try_timeout=5.0, previous_hosts=True)
    publish_faulty(
        service,
        [pa.address, pb.address],
        cluster_proto=fault_cluster(max_retries=max_retries),
        retry_policy=policy,
    )
    wait_served(echo, [a, b])
    run_calls(echo, 4)  # both connections up
    a.calls = b.calls = 0
    a.delay = b.delay = 0.5
    results: list[Figures] = []
    lock = threading.Lock()

    def one() -> None:
        fig = run_calls(echo, 1)
        with lock:
            results.append(fig)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    wait_until(lambda: a.calls + b.calls >= 10, what="ten calls in flight")
    assert (a.calls, b.calls) == (5, 5)
    assert pb.reset_connections() == 1
    for t in threads:
        t.join(10)

    served = sum((r.served for r in results), Counter[str]())
    errors = [e for r in results for e in r.errors]
    print(f"in flight, b reset, max_retries={max_retries}: served {dict(served)}, {errors}")
    assert served["b"] == 0
    assert served["a"] == 10 - expected_failed
    assert len(errors) == expected_failed
    assert all("retry budget exhausted" in e for e in errors), errors


def test_endpoint_serves_again_once_the_fault_clears(
    service: Service, backends: Backends, echo: Echo, fault_proxy: Proxies
) -> None:
    """Time to recover: bounded by gRPC's reconnect backoff (1 s, growing
    1.6x); 30 s is a generous bound, not an expectation."""
    good, bad = backends("good", "bad")
    proxy = fault_proxy(bad.address, Fault.reset(0))
    publish_faulty(service, [good.address, proxy.address])
    wait_served(echo, [good])
    assert not run_calls(echo, calls(10)).failed

    proxy.fault = Fault.passthrough()
    cleared = time.monotonic()
    served_bad = False
    while not served_bad and time.monotonic() - cleared < 30:
        served_bad = run_calls(echo, 2).served["bad"] > 0
        time.sleep(0.02)
    recovered = time.monotonic() - cleared

    print(f"grpc sync: endpoint back {recovered:.2f}s after the reset fault cleared")
    assert served_bad, "the endpoint never served again within 30 s"


def test_aio_endpoint_reset_mid_reply_costs_no_call(
    service: Service, backends: Backends, echo: Echo, fault_proxy: Proxies, mesh: Mesh
) -> None:
    """The same figure through ``proxyless.grpc.aio`` (one fault: the retry
    logic is the sync channel's)."""
    good, bad = backends("good", "bad")
    fault = Fault.reset(200)
    proxy = fault_proxy(bad.address, fault)
    publish_faulty(service, [good.address, proxy.address])
    wait_served(echo, [good])
    n = calls(20)

    async def main() -> tuple[Counter[str], list[str]]:
        served: Counter[str] = Counter()
        errors: list[str] = []
        async with proxyless.grpc.aio.channel(TARGET, mesh=mesh) as ch:
            call = ch.unary_unary(ECHO_METHOD)
            for _ in range(n):
                try:
                    served[backend_of(await call(b"x", timeout=5))] += 1
                except grpc.aio.AioRpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")
        return served, errors

    served, errors = asyncio.run(main())

    print(f"grpc aio {fault.kind.value}: served {dict(served)}, failed {errors[:3]}")
    assert not errors
    assert served == Counter(good=n)
