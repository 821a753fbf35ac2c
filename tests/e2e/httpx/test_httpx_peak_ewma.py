"""Peak EWMA on the httpx transport: the latency samples come from the
shared request path (``runtime/call.py``), so an HTTP backend that answers
30 ms later than the others gets clearly less than round robin's third of
the requests. Real HTTP servers on 127.0.0.1, a real ADS server; bounded."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from tests.e2e.httpx.conftest import CLUSTER, URL, HttpEcho, Service, reply, wait_until

from proxyless.mesh import Mesh
from proxyless.testing.lb_policies import cluster_with_policy, peak_ewma
from proxyless.testing.resources import cluster

REQUESTS = 150


class SlowEcho(HttpEcho):
    """An HttpEcho that answers ``delay`` seconds late."""

    delay = 0.030

    def _serve(self, handler: Any, body: bytes) -> None:
        time.sleep(self.delay)
        super()._serve(handler, body)


def test_peak_ewma_sends_less_to_the_slow_http_backend(
    service: Service,
    mesh: Mesh,
    backends: Callable[..., list[HttpEcho]],
    client: httpx.Client,
) -> None:
    fast = backends("a", "b")
    slow = SlowEcho("slow").start()
    try:
        # a short decay, so that the first requests' peaks (new connections,
        # server threads starting) are forgotten within the warm-up
        policy = peak_ewma(decay="0.25s", default_rtt="0.005s")
        service.simple([*fast, slow], cluster_proto=cluster_with_policy(cluster(CLUSTER), policy))
        wait_until(lambda: client.get(f"{URL}/").status_code == 200, what="the service")
        for _ in range(30):  # warm-up: every endpoint connected and measured
            client.get(f"{URL}/")
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + 30
        for _ in range(REQUESTS):
            counts[reply(client.get(f"{URL}/"))["backend"]] += 1
            if time.monotonic() > deadline:
                break
        assert counts["slow"] < 0.15 * REQUESTS, counts
        lb = mesh.clusters.get(CLUSTER)
        assert lb is not None and lb.lb.latency is not None
        assert all(e.rtt is not None for e in lb.endpoints())
    finally:
        slow.stop()
