"""Network faults on one endpoint of a cluster, through the httpx transport (HTTP/1.1).

Cluster ``c`` has a good endpoint and one behind a
:class:`~proxyless.testing.faultproxy.FaultProxy` (or a
:class:`~proxyless.testing.faultproxy.BlackHole`). The route retries on
``connect-failure,reset,5xx`` (2 retries, 300 ms per try; a per-try timeout
is retried under ``reset``, Envoy's "disconnect/reset/read timeout") and
the cluster's ``connect_timeout`` is 250 ms. Each test states its figure:
calls failed out of N (10 or 20 in CI, 300 with ``PROXYLESS_LONG=1``).
HTTP/1.1 cannot tell a silent server from a slow one until the per-try
timeout: without outlier detection every call that picks it pays that
timeout and is then served elsewhere; with outlier detection the endpoint
is ejected after its consecutive local-origin failures and gets no more
calls.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from tests.e2e.faults.conftest import Figures, calls
from tests.e2e.faults_httpx.conftest import (
    HttpEcho,
    Service,
    fault_cluster,
    http_calls,
    publish_http,
    wait_http_served,
    wait_until,
)
from tests.e2e.httpx.conftest import outlier_detection

from proxyless.mesh import Mesh
from proxyless.testing.faultproxy import BlackHole, Fault, FaultProxy

pytestmark = pytest.mark.leak_strict

Backends = Callable[..., list[HttpEcho]]
Proxies = Callable[..., FaultProxy]

FAULTS = [
    pytest.param(Fault.reset(0), 20, id="reset-at-connect"),
    pytest.param(Fault.reset(100), 20, id="reset-mid-reply"),
    pytest.param(Fault.half_close(), 20, id="half-close"),
    pytest.param(Fault.slow(2_000), 6, id="slow-2kBps"),
    pytest.param(Fault.hold(), 4, id="hold"),
    pytest.param(None, 4, id="black-hole"),
]


def _address(fault: Fault | None, proxy: Proxies, bad: HttpEcho, hole: BlackHole) -> str:
    return hole.address if fault is None else proxy(bad.address, fault).address


@pytest.mark.parametrize(("fault", "short"), FAULTS)
def test_fault_on_one_endpoint_costs_no_call(
    fault: Fault | None,
    short: int,
    service: Service,
    backends: Backends,
    client: httpx.Client,
    fault_proxy: Proxies,
    black_hole: BlackHole,
) -> None:
    good, bad = backends("good", "bad")
    publish_http(service, [good.address, _address(fault, fault_proxy, bad, black_hole)])
    wait_http_served(client)

    fig = http_calls(client, calls(short))

    name = "black-hole" if fault is None else fault.kind.value
    print(f"httpx {name}: {fig}")
    assert not fig.failed
    if fault is not None and fault.kind.value == "slow":
        assert fig.served["bad"] > 0  # slower, not broken
    else:
        assert fig.served == Counter(good=fig.calls)


@pytest.mark.parametrize(
    ("fault", "split"),
    [
        pytest.param(Fault.hold(), False, id="hold-consecutive-5xx"),
        pytest.param(None, True, id="black-hole-split-local-origin"),
    ],
)
def test_outlier_detection_ejects_a_silent_endpoint(
    fault: Fault | None,
    split: bool,
    service: Service,
    backends: Backends,
    client: httpx.Client,
    fault_proxy: Proxies,
    black_hole: BlackHole,
    mesh: Mesh,
) -> None:
    """Three consecutive failures (per-try timeouts, or connect timeouts)
    eject the endpoint: at most 3 calls pay a timeout, none after."""
    good, bad = backends("good", "bad")
    od = outlier_detection(consecutive_5xx=3)
    if split:
        od.split_external_local_origin_errors = True
        od.consecutive_local_origin_failure.value = 3
    proxy = fault_proxy(bad.address, fault) if fault is not None else None
    publish_http(
        service,
        [good.address, proxy.address if proxy is not None else black_hole.address],
        cluster_proto=fault_cluster(outlier=od),
    )
    wait_http_served(client)

    first = http_calls(client, 10)
    accepted = proxy.accepted if proxy is not None else 0
    after = http_calls(client, calls(10))

    rt = mesh.clusters.get("c")
    assert rt is not None and rt.outlier is not None
    print(f"httpx {'hold' if fault else 'black-hole'} split={split}: {first} / then {after}")
    assert not first.failed and not after.failed
    assert rt.outlier.stats["ejections_active"] == 1
    assert after.served == Counter(good=after.calls)
    if proxy is not None:
        assert proxy.accepted == accepted  # the ejected endpoint got no new connection


@pytest.mark.parametrize(
    ("max_retries", "expected_failed"),
    [
        pytest.param(None, 2, id="default-max-retries-3"),
        pytest.param(10, 0, id="max-retries-10"),
    ],
)
def test_reset_of_requests_in_flight_spares_the_other_endpoint(
    max_retries: int | None,
    expected_failed: int,
    service: Service,
    backends: Backends,
    client: httpx.Client,
    fault_proxy: Proxies,
) -> None:
    """Ten requests held by the backends, five on each; ``b``'s connections
    are reset. The five on ``a`` succeed; ``b``'s are retried on ``a`` (the
    ``previous_hosts`` predicate), as many at once as ``max_retries`` allows
    (Envoy's default 3, so 2 fail, naming the limit)."""
    a, b = backends("a", "b")
    pa, pb = fault_proxy(a.address), fault_proxy(b.address)
    publish_http(
        service,
        [pa.address, pb.address],
        cluster_proto=fault_cluster(max_retries=max_retries),
        per_try=5.0,
        previous_hosts=True,
    )
    wait_http_served(client)
    a.hold()
    b.hold()
    results: list[Figures] = []
    lock = threading.Lock()

    def one() -> None:
        fig = http_calls(client, 1, timeout=10)
        with lock:
            results.append(fig)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: a.held + b.held >= 10, what="ten requests held")
        assert (a.held, b.held) == (5, 5)
        assert pb.reset_connections() == 5

        def settled() -> bool:
            # b's five are retried on a (still held), as many at once as the
            # limit allows; the others fail at once. Only then may a answer,
            # or a retry that ends early would make room for another.
            with lock:
                failed_now = sum(sum(r.failed.values()) for r in results)
            return a.held == 10 - expected_failed and failed_now == expected_failed

        wait_until(settled, what="retries held on a, the rest refused")
    finally:
        a.release()
        b.release()
    for t in threads:
        t.join(10)

    served = sum((r.served for r in results), Counter[str]())
    failed = sum((r.failed for r in results), Counter[str]())
    errors = [e for r in results for e in r.errors]
    print(f"httpx in flight, b reset, max_retries={max_retries}: {dict(served)} {errors}")
    assert served == Counter(a=10 - expected_failed)
    assert sum(failed.values()) == expected_failed
    assert all("retry budget exhausted" in e for e in errors), errors
