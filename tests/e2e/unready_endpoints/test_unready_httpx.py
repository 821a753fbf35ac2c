"""httpx through a cluster of a good, a silent and a resetting endpoint, with
outlier detection on local-origin errors.

HTTP/1.1 cannot tell a silent server until a request times out, so the
first calls that meet it wait out the 300 ms per-try timeout and are
retried. With ``split_external_local_origin_errors`` and
``consecutive_local_origin_failure`` 3 the silent endpoint is ejected after
its third per-try timeout (a local-origin error, Envoy's outlier detection
doc), the resetting one after three resets (``consecutive_5xx``), and from
then on every call goes to the good endpoint: 0 failed calls in all, and
after the ejections p99 <= max(2 x baseline p99, baseline p99 + 20 ms),
the baseline measured side by side on a service listing the good endpoint
alone.

Panic routing is off for the cluster (``healthy_panic_threshold`` 0): with
two of three endpoints ejected Envoy's default 50% threshold would send
calls to every endpoint again. The route allows three retries here rather
than two: an ejection rebuilds
the round robin picker, whose rotation then starts afresh, so one call's
retries can meet the resetting endpoint twice while the ejections happen.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from envoy.config.cluster.v3 import outlier_detection_pb2
from google.protobuf import wrappers_pb2
from tests.e2e.httpx.conftest import HttpEcho
from tests.e2e.unready_endpoints.conftest import (
    ResettingServer,
    Service,
    SilentServer,
    p99,
    publish,
    side_by_side,
)

import proxyless.httpx
from proxyless.mesh import Mesh
from proxyless.testing.resources import duration

NAMES = ("three:8080", "good:8080")
#: Calls allowed before both bad endpoints must have been ejected.
WARM_UP_LIMIT = 40


def local_origin_outlier() -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=3),
        enforcing_consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=100),
        consecutive_5xx=wrappers_pb2.UInt32Value(value=3),
        interval=duration(10.0),
        base_ejection_time=duration(30.0),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=67),
    )


def test_silent_endpoint_is_ejected_on_local_origin_failures(
    make_mesh: Callable[..., Mesh],
    service: Service,
    bad_endpoints: tuple[SilentServer, ResettingServer],
) -> None:
    good = HttpEcho("good").start()
    silent, resetting = bad_endpoints
    try:
        publish(
            service,
            good.address,
            [silent.address, resetting.address],
            names=NAMES,
            outlier=local_origin_outlier(),
            num_retries=3,
            panic_threshold=0.0,
        )
        mesh = make_mesh()
        served: list[str] = []
        with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as client:

            def call(name: str) -> None:
                response = client.get(f"http://{name}/x")
                response.raise_for_status()
                served.append(json.loads(response.content)["backend"])

            runtime = None
            ejected_after = 0
            for count in range(1, WARM_UP_LIMIT + 1):
                call(NAMES[0])
                runtime = runtime or mesh.clusters.get("three")
                if runtime is not None and all(
                    es.ejected for es in runtime.endpoints() if es.address != good.address
                ):
                    ejected_after = count
                    break
            else:
                raise AssertionError(f"bad endpoints not ejected after {WARM_UP_LIMIT} calls")
            assert runtime is not None and runtime.outlier is not None
            kinds = {es.address: es.outlier.ejection_type for es in runtime.endpoints()}
            assert kinds[silent.address] == "consecutive_local_origin_failure", kinds
            # A reset right after the connect is a connect failure (local) or
            # a reset (external), depending on when the client notices it.
            assert kinds[resetting.address] in (
                "consecutive_local_origin_failure",
                "consecutive_5xx",
            ), kinds
            served.clear()
            three, alone, failures = side_by_side(call, NAMES)
    finally:
        good.stop()
    base, got = p99(alone), p99(three)
    print(
        f"httpx: ejected after {ejected_after} calls; then {len(three)} calls, {len(failures)} failed;"
        f" p99 {got * 1000:.2f} ms (good endpoint alone: {base * 1000:.2f} ms)"
    )
    assert not failures, failures[0]
    assert set(served) == {"good"}
    assert got <= max(2 * base, base + 0.020), (got, base)
