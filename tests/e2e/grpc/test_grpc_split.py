"""Weighted cluster splits on real gRPC calls (gRFC A28 weighted_clusters),
and a weight change pushed while calls are flowing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tests.e2e.grpc.conftest import SERVICE, Xds, backend_of, count_backends, weights_of

from proxyless.controlplane.server import AdsServer
from proxyless.testing.backends import EchoServer
from proxyless.testing.resources import ROUTE_URL, route


def test_weighted_split_then_live_weight_change(
    xds: Xds,
    ads: AdsServer,
    backends: Callable[..., list[EchoServer]],
    echo: Callable[..., bytes],
) -> None:
    a, b = backends("a", "b")
    xds.cluster("ca", [a.address])
    xds.cluster("cb", [b.address])
    xds.service(SERVICE, [route(prefix="/", weighted={"ca": 90, "cb": 10})])
    echo(b"warm-up", timeout=10)

    shares = weights_of(count_backends(echo, 2000))
    assert abs(shares.get("a", 0.0) - 90.0) <= 3.0, shares
    assert abs(shares.get("b", 0.0) - 10.0) <= 3.0, shares

    # A caller keeps calling while the split changes to 50/50.
    served: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        deadline = time.monotonic() + 30
        for _ in range(20_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                served.append(backend_of(echo(b"x", timeout=5)))
            except Exception as exc:  # every failure counts, whatever its type
                errors.append(exc)

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    try:
        _wait_len(served, 300)
        since = len(ads.requests)
        xds.service(SERVICE, [route(prefix="/", weighted={"ca": 50, "cb": 50})])
        version = ads.version(ROUTE_URL)
        ads.wait_for(
            lambda r: r.type_url == ROUTE_URL and r.version_info == version and not r.is_nack,
            timeout=10,
            since=since,
        )
        applied_at = len(served)
        _wait_len(served, applied_at + 1200)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert errors == [], errors[:3]
    after = served[applied_at : applied_at + 1200]
    share_b = 100.0 * after.count("b") / len(after)
    assert abs(share_b - 50.0) <= 6.0, share_b


def _wait_len(items: list[str], n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(items) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(items)} of {n} calls done after {timeout:g}s")
        time.sleep(0.01)
