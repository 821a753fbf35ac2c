"""Control-plane faults: what a Mesh does when its xDS server misbehaves.

The promise under test (gRFC A57; Envoy's xDS protocol document): the last
good config keeps serving while the control plane is slow, silent, sends
partial or oversized responses, floods the client with updates or keeps
dropping streams; a target never configured fails with an error that says
what is missing; nothing grows without bound. Each test states its figure
(calls failed, time or reconnects to recover, memory growth); the numbers
are in ``docs/reliability.md``.

The misbehaving servers are :class:`ScriptedAds` (in this folder), the
project's :class:`~proxyless.controlplane.server.AdsServer` behind a
:class:`~proxyless.testing.faultproxy.FaultProxy`, and for the 100 MB
ClusterLoadAssignment a ScriptedAds in a process of its own, so that the
memory measured is the client's. Meshes use a fake clock: reconnect backoff
and does-not-exist timers move only when a test advances it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import bootstrap_for, close_endpoint_pools
from tests.e2e.cp_faults.conftest import (
    CLUSTER,
    LONG,
    Caller,
    good_config,
    rss_bytes,
    wait_until,
)
from tests.e2e.cp_faults.scripted_ads import ScriptedAds

from proxyless.controlplane.server import AdsServer
from proxyless.grpc._pool import POOL
from proxyless.mesh import Mesh
from proxyless.testing import FakeClock
from proxyless.testing.backends import EchoServer
from proxyless.testing.faultproxy import Fault, FaultProxy
from proxyless.testing.resources import CLUSTER_URL, ENDPOINT_URL, cluster, endpoints

pytestmark = pytest.mark.leak_strict

Backends = Callable[..., list[EchoServer]]
MeshOn = Callable[..., Mesh]

ROOT = Path(__file__).resolve().parents[3]
MB = 1 << 20


def _serve(scripted: ScriptedAds, addresses: list[str]) -> None:
    for type_url, resources in good_config(addresses).items():
        scripted.set(type_url, resources)


def _advance(clock: FakeClock, seconds: float, step: float = 1.0) -> None:
    """Advance the fake clock in steps, letting the Mesh thread run between them."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
        time.sleep(0.005)


# -- a control plane that never answers -------------------------------------------------------


def test_silent_control_plane_fails_a_new_target_with_a_clear_error(
    scripted: ScriptedAds, scripted_mesh: MeshOn, clock: FakeClock
) -> None:
    """Nothing cached: a call waits for config up to its deadline, then fails
    naming the resource it waited for; once the does-not-exist timer (15 s
    on a connected stream) fires, calls fail at once, saying so."""
    scripted.silent = True
    caller = Caller(scripted_mesh())

    assert not caller.call(timeout=0.5)
    wait_until(lambda: scripted.requests >= 1, what="the LDS request at the silent server")
    _advance(clock, 16)
    wait_until(
        lambda: not caller.call(timeout=2.0) and "does not exist" in caller.failed[-1],
        what="the does-not-exist error",
    )

    assert caller.ok == 0
    assert "LDS 'svc:80' REQUESTED" in caller.failed[0], caller.failed[0]
    assert "LDS resource 'svc:80' does not exist" in caller.failed[-1], caller.failed[-1]
    assert scripted.responses == 0


def test_cached_config_serves_while_the_control_plane_goes_silent(
    scripted: ScriptedAds, scripted_mesh: MeshOn, clock: FakeClock, backends: Backends
) -> None:
    """The stream is dropped and the new one is never answered: every call
    keeps being served from the cached config, through 60 s of (fake) time
    in which no does-not-exist timer may fire for a cached resource (A57)."""
    (a,) = backends("a")
    _serve(scripted, [a.address])
    caller = Caller(scripted_mesh())
    caller.wait_served()
    streams = scripted.streams

    scripted.silent = True
    scripted.kick()
    wait_until(lambda: scripted.streams > streams, what="the client's new stream")
    caller.background()
    _advance(clock, 60)
    caller.join()

    print(f"silent control plane: {caller.ok} calls served, {len(caller.failed)} failed")
    assert caller.ok > 0 and not caller.failed, caller.failed[:3]


# -- slow, partial ------------------------------------------------------------------------------


def test_slow_control_plane_delays_config_and_fails_no_call(
    scripted: ScriptedAds, scripted_mesh: MeshOn, backends: Backends
) -> None:
    """250 ms before every response: the first call is served after the four
    responses it needs (about 1 s; 10 s is the bound), and an endpoint change
    later is applied with no call failing meanwhile."""
    a, b = backends("a", "b")
    _serve(scripted, [a.address])
    scripted.delay = 0.25
    caller = Caller(scripted_mesh())
    start = time.monotonic()
    caller.wait_served()
    first = time.monotonic() - start

    caller.background()
    scripted.set(ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, [b.address])})
    b_calls = b.calls
    scripted.push(ENDPOINT_URL)
    wait_until(lambda: b.calls > b_calls, what="the slow endpoint change")
    caller.join()

    print(f"slow control plane: first call after {first:.2f}s; {caller.ok} calls, 0 failed")
    assert not caller.failed, caller.failed[:3]


def test_response_cut_mid_stream_keeps_the_last_good_config(
    ads: AdsServer, backends: Backends, clock: FakeClock
) -> None:
    """The connection to the control plane is reset 100 kB into a 400 kB
    ClusterLoadAssignment: the partial message is dropped with its stream,
    the client reconnects, and the next stream delivers it whole. No call
    fails meanwhile; the new endpoint serves after the reconnect."""
    a, b = backends("a", "b")
    for type_url, resources in good_config([a.address]).items():
        ads.set_resources(type_url, resources)
    proxy = FaultProxy(ads.target.replace("localhost", "127.0.0.1"))
    boot = bootstrap_for(ads, "cp-faults")
    boot["xds_servers"][0]["server_uri"] = proxy.address
    mesh = Mesh(boot, clock=clock)
    try:
        caller = Caller(mesh)
        caller.wait_served()
        caller.background()

        padded = endpoints(CLUSTER, [b.address])
        padded.endpoints[0].metadata.filter_metadata["pad"].fields["p"].string_value = "x" * (
            400 * 1024
        )
        proxy.plan(Fault.reset(after_bytes=100 * 1024))
        accepted = proxy.accepted
        ads.set_resources(ENDPOINT_URL, {CLUSTER: padded})
        proxy.reset_connections()
        deadline = time.monotonic() + 20
        while b.calls == 0 and time.monotonic() < deadline:
            clock.advance(1.0)  # any reconnect backoff
            time.sleep(0.05)
        caller.join()
    finally:
        mesh.close()
        proxy.close()
        close_endpoint_pools()

    print(
        f"response cut mid-stream: {proxy.accepted - accepted} reconnects, "
        f"{caller.ok} calls, {len(caller.failed)} failed"
    )
    assert b.calls > 0, "the whole ClusterLoadAssignment never arrived"
    assert proxy.accepted - accepted >= 2  # the cut connection, then a whole one
    assert not caller.failed, caller.failed[:3]


# -- huge -----------------------------------------------------------------------------------


@pytest.fixture
def huge_server(backends: Backends) -> Iterator[tuple[subprocess.Popen[str], EchoServer]]:
    (a,) = backends("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.cp_faults.scripted_ads", a.address],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc, a
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _command(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_huge_cluster_load_assignment_is_refused_and_the_last_good_config_serves(
    huge_server: tuple[subprocess.Popen[str], EchoServer],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 100 MB ClusterLoadAssignment is over the xDS channel's 64 MB receive
    limit: grpc ends the stream with RESOURCE_EXHAUSTED before the message is
    buffered, the client reconnects (and is sent it again, every time), and
    every call is served from the last good config. The client's memory
    stays bounded by far less than one such message."""
    proc, a = huge_server
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    boot = {
        "xds_servers": [
            {"server_uri": f"127.0.0.1:{port}", "channel_creds": [{"type": "insecure"}]}
        ],
        "node": {"id": "cp-faults-huge"},
    }
    mesh = Mesh(boot, clock=clock)
    try:
        caller = Caller(mesh)
        caller.wait_served()
        before = rss_bytes()
        caplog.set_level(logging.INFO, logger="proxyless.xds_client")

        assert _command(proc, "huge 100") == "OK"
        peak = 0
        rounds = 200 if LONG else 24
        for i in range(rounds):
            caller.call()
            peak = max(peak, rss_bytes() - before)
            if i % 8 == 7:
                clock.advance(3.0)
            time.sleep(0.05)
        streams = int(_command(proc, "stats").split()[1])

        assert _command(proc, "normal") == "OK"
        served = a.calls
        caller.calls(5)
    finally:
        mesh.close()
        close_endpoint_pools()

    print(
        f"100 MB ClusterLoadAssignment: {streams} streams, {caller.ok} calls served, "
        f"{len(caller.failed)} failed, client RSS peak +{peak / MB:.0f} MB"
    )
    assert not caller.failed, caller.failed[:3]
    assert a.calls >= served + 5
    assert peak < 200 * MB
    assert any("RESOURCE_EXHAUSTED" in r.getMessage() for r in caplog.records)


# -- fast: many responses, flapping, dropped streams ------------------------------------------------


def test_burst_of_responses_is_absorbed(
    scripted: ScriptedAds, scripted_mesh: MeshOn, backends: Backends
) -> None:
    """2,000 ClusterLoadAssignment responses pushed back to back (300 in CI),
    the endpoints alternating between ``a`` and ``b``, none waiting for an
    ACK: calls keep succeeding, the client ACKs the last one, and its memory
    and threads come back to where they were."""
    a, b = backends("a", "b")
    _serve(scripted, [a.address])
    caller = Caller(scripted_mesh())
    caller.wait_served()
    threads = threading.active_count()
    before = rss_bytes()
    caller.background()

    n = 2000 if LONG else 300
    start = time.monotonic()
    sent = scripted.responses
    only_a = {CLUSTER: endpoints(CLUSTER, [a.address])}
    only_b = {CLUSTER: endpoints(CLUSTER, [b.address])}
    for i in range(n):
        scripted.push(ENDPOINT_URL, only_a if i % 2 else only_b)
    scripted.set(ENDPOINT_URL, {CLUSTER: endpoints(CLUSTER, [a.address, b.address])})
    scripted.push(ENDPOINT_URL)
    wait_until(lambda: scripted.responses > sent + n, timeout=30, what=f"{n + 1} responses sent")
    wait_until(
        lambda: scripted.acked.get(ENDPOINT_URL) == scripted.last_sent[ENDPOINT_URL],
        timeout=30,
        what="the ACK of the last response",
    )
    settled = time.monotonic() - start
    caller.join()
    # the last assignment (a and b) reached the data path: b serves calls
    wait_until(lambda: caller.call() and b.calls > 0, what="a call served by b")
    growth = rss_bytes() - before

    print(
        f"burst of {n} responses: ACKed the last after {settled:.2f}s; "
        f"{caller.ok} calls, {len(caller.failed)} failed; RSS +{growth / MB:.1f} MB"
    )
    assert not caller.failed, caller.failed[:3]
    assert threading.active_count() <= threads + 2
    assert growth < 64 * MB


def test_flapping_cluster_recovers_and_leaves_nothing_behind(
    ads: AdsServer, make_mesh: MeshOn, clock: FakeClock, backends: Backends
) -> None:
    """The cluster is removed and restored 100 times in a row (SotW: a
    Cluster missing from a response is deleted). Calls in between may fail,
    each naming the missing cluster; once it stays, every call succeeds and
    the endpoint channels and threads are what they were."""
    (a,) = backends("a")
    for type_url, resources in good_config([a.address]).items():
        ads.set_resources(type_url, resources)
    caller = Caller(make_mesh(clock=clock))
    caller.wait_served()
    threads = threading.active_count()
    pool = len(POOL)
    caller.background()

    flips = 400 if LONG else 100
    for i in range(flips):
        ads.set_resources(CLUSTER_URL, {} if i % 2 == 0 else {CLUSTER: cluster(CLUSTER)})
        time.sleep(0.002)
    ads.set_resources(CLUSTER_URL, {CLUSTER: cluster(CLUSTER)})
    time.sleep(0.2)
    caller.join()
    during = list(caller.failed)
    caller.failed.clear()
    wait_until(lambda: caller.call(), what="calls after the flapping")
    caller.failed.clear()
    caller.calls(20)

    print(f"flapping cluster x{flips}: {len(during)} calls failed during, 0 after; {during[:2]}")
    assert not caller.failed, caller.failed[:3]
    assert all("cluster 'c'" in f for f in during), during[:3]
    assert len(POOL) <= pool
    assert threading.active_count() <= threads + 2


def test_server_that_drops_every_stream_costs_no_call(
    scripted: ScriptedAds, scripted_mesh: MeshOn, backends: Backends
) -> None:
    """The server answers one response per stream, then ends it: calls keep
    being served from the cached config and the client's threads (one
    reader per stream) do not pile up."""
    (a,) = backends("a")
    _serve(scripted, [a.address])
    caller = Caller(scripted_mesh())
    caller.wait_served()
    threads = threading.active_count()
    streams = scripted.streams

    scripted.close_after = 1
    scripted.kick()
    caller.background()
    time.sleep(1.0)
    caller.join()
    opened = scripted.streams - streams
    after = threading.active_count()

    print(f"server dropping every stream: {opened} streams in 1 s, {caller.ok} calls, 0 failed")
    assert opened >= 1
    assert not caller.failed, caller.failed[:3]
    assert after <= threads + 4


def test_server_that_drops_every_stream_is_reconnected_to_with_backoff(
    scripted: ScriptedAds, scripted_mesh: MeshOn, backends: Backends
) -> None:
    """Envoy waits a jittered backoff before every new stream (reset once a
    response arrives); with the fake clock frozen, a few streams at most."""
    (a,) = backends("a")
    _serve(scripted, [a.address])
    caller = Caller(scripted_mesh())
    caller.wait_served()
    streams = scripted.streams

    scripted.close_after = 1
    scripted.kick()
    time.sleep(0.5)

    assert scripted.streams - streams <= 5
