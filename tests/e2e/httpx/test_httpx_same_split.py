"""One Istio VirtualService, three clients: proxyless.httpx.Transport,
proxyless.httpx.AsyncTransport and proxyless.grpc.channel see the same
weighted split (within 3 points over 2,000 requests each), all fed by the
embedded control plane from the same YAML."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.e2e.httpx.conftest import HttpEcho, reply

import proxyless.grpc
import proxyless.httpx
from proxyless.controlplane import ControlPlane
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

N = 2000
SPLIT = {"v1": 80.0, "v2": 20.0}

MESH_YAML = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9080, name: http, protocol: HTTP}}
  - {{number: 9090, name: grpc, protocol: GRPC}}
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {h1}, grpc: {g1}}}
    labels: {{version: v1}}
  - address: 127.0.0.1
    ports: {{http: {h2}, grpc: {g2}}}
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: 80
    - destination: {{host: reviews, subset: v2}}
      weight: 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


@pytest.fixture
def split_mesh() -> Iterator[Mesh]:
    http = [HttpEcho("v1").start(), HttpEcho("v2").start()]
    grpc_servers = [EchoServer("v1").start(), EchoServer("v2").start()]
    yaml = MESH_YAML.format(
        h1=http[0].port,
        h2=http[1].port,
        g1=grpc_servers[0].address.rpartition(":")[2],
        g2=grpc_servers[1].address.rpartition(":")[2],
    )
    try:
        with ControlPlane(yaml, stderr=io.StringIO()) as cp:
            mesh = Mesh(cp.bootstrap(node_id="split-client"), rng=random.Random(7))
            try:
                yield mesh
            finally:
                mesh.close()
    finally:
        for h in http:
            h.stop()
        for g in grpc_servers:
            g.stop(0)


def _shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: 100.0 * counts[k] / total for k in SPLIT}


def _assert_split(counts: Counter[str], who: str) -> None:
    assert sum(counts.values()) == N, (who, counts)
    shares = _shares(counts)
    for version, expected in SPLIT.items():
        assert abs(shares[version] - expected) <= 3.0, (who, shares)


def test_same_virtual_service_same_split(split_mesh: Mesh) -> None:
    mesh = split_mesh
    results: dict[str, Counter[str]] = {}

    with httpx.Client(transport=proxyless.httpx.Transport(mesh=mesh), timeout=10.0) as client:
        results["httpx"] = Counter(
            reply(client.get("http://reviews:9080/ratings"))["backend"] for _ in range(N)
        )

    async def run_async() -> Counter[str]:
        counts: Counter[str] = Counter()
        async with httpx.AsyncClient(
            transport=proxyless.httpx.AsyncTransport(mesh=mesh), timeout=10.0
        ) as client:
            for _ in range(N // 50):
                batch = await asyncio.gather(
                    *(client.get("http://reviews:9080/ratings") for _ in range(50))
                )
                counts.update(reply(r)["backend"] for r in batch)
        return counts

    results["httpx-async"] = asyncio.run(run_async())

    channel = proxyless.grpc.channel("xds:///reviews:9090", mesh=mesh)
    echo: Callable[..., bytes] = channel.unary_unary(ECHO_METHOD)
    results["grpc"] = Counter(decode_reply(echo(b"x", timeout=10))["backend"] for _ in range(N))
    channel.close()

    for who, counts in results.items():
        _assert_split(counts, who)
