"""Fixtures: an XdsClient on its own loop thread, against the real ADS server
on 127.0.0.1 of ``tests/e2e/conftest.py``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from tests.e2e.conftest import wait_until as wait_until

from proxyless.bootstrap import Bootstrap, load_bootstrap
from proxyless.testing import FakeClock
from proxyless.xds_client import DecodeResult, ResourceType, XdsClient

CLUSTER_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_URL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def _decode_cluster(data: bytes) -> DecodeResult:
    """A deliberately small decoder: the client under test is generic."""
    msg = cluster_pb2.Cluster()
    try:
        msg.ParseFromString(data)
    except Exception as exc:
        return DecodeResult(None, None, (f"could not decode Cluster: {exc}",))
    if msg.type == cluster_pb2.Cluster.STRICT_DNS:
        return DecodeResult(msg.name, None, ("type: STRICT_DNS is not supported",))
    return DecodeResult(msg.name, msg.alt_stat_name or msg.name)


TEST_CLUSTER = ResourceType(CLUSTER_URL, "CDS", True, _decode_cluster)
TEST_ROUTE = ResourceType(
    ROUTE_URL, "RDS", False, lambda data: DecodeResult("never", None, ("unused",))
)


def cluster(name: str, tag: str = "", *, bad: bool = False) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        alt_stat_name=tag,
        type=cluster_pb2.Cluster.STRICT_DNS if bad else cluster_pb2.Cluster.EDS,
    )


class Recorder:
    """A ResourceWatcher that records every call, thread-safely."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def on_changed(self, value: Any) -> None:
        self._add("changed", value)

    def on_resource_error(self, error: Exception) -> None:
        self._add("resource_error", error)

    def on_ambient_error(self, error: Exception) -> None:
        self._add("ambient_error", error)

    def _add(self, kind: str, value: Any) -> None:
        with self._cond:
            self.events.append((kind, value))
            self._cond.notify_all()

    def wait(
        self, kind: str, pred: Callable[[Any], bool] = lambda v: True, timeout: float = 5.0
    ) -> Any:
        with self._cond:
            found: list[Any] = []

            def ready() -> bool:
                found.extend(v for k, v in self.events if k == kind and pred(v))
                return bool(found)

            if not self._cond.wait_for(ready, timeout):
                raise AssertionError(f"no {kind} event within {timeout}s; got {self.events}")
            return found[-1]

    def kinds(self) -> list[str]:
        with self._cond:
            return [k for k, _ in self.events]


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def make_bootstrap(
    target: str, *, features: tuple[str, ...] = ("xds_v3",), node: dict[str, Any] | None = None
) -> Bootstrap:
    return load_bootstrap(
        {
            "xds_servers": [
                {
                    "server_uri": target,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": list(features),
                }
            ],
            "node": node or {"id": "test-node"},
        }
    )


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[XdsClient, FakeClock]]]:
    made: list[tuple[XdsClient, LoopThread]] = []

    def make(bootstrap: Bootstrap, **kwargs: Any) -> tuple[XdsClient, FakeClock]:
        lt = LoopThread()
        clock = FakeClock()
        client = XdsClient(bootstrap, lt.loop, resource_types=[TEST_CLUSTER], clock=clock, **kwargs)
        made.append((client, lt))
        return client, clock

    yield make
    for client, lt in made:
        client.close()
        lt.stop()
