"""The benchmarks' code paths with tiny counts, so they cannot rot.

Runs bench/grpc_overhead.py end to end (direct, proxyless sync and aio, the
EDS update while calls flow, the memory probes in child processes) and
bench/profile_sync.py's measurements, without Envoy and without grpcio's
native xDS client (it reads GRPC_XDS_BOOTSTRAP once per process). Asserts
shapes and counts, never timings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from bench import _common as c
from bench import grpc_overhead, profile_sync
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([5.0], 99, 5.0, id="one-sample"),
        pytest.param([1.0, 2.0, 3.0], 50, 2.0, id="median-odd"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median-interpolated"),
        pytest.param([float(i) for i in range(101)], 99, 99.0, id="p99-of-0-to-100"),
        pytest.param([1.0, 2.0], 100, 2.0, id="p100-is-max"),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert c.percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        c.percentile([], 50)


def test_summarize_converts_ns_to_us() -> None:
    stats = c.summarize([1000, 2000, 3000])
    assert (stats.n, stats.p50, stats.max, stats.mean) == (3, 2.0, 3.0, 2.0)


def test_timed_calls_is_bounded_by_count() -> None:
    seen = []
    samples = c.timed_calls(lambda: seen.append(1), 7, 60.0)
    assert len(samples) == 7 == len(seen)


def test_rounds_rotate_the_order() -> None:
    orders = grpc_overhead._orders(["a", "b", "c"], 4)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


@pytest.mark.parametrize(
    ("calls", "block", "sizes"),
    [
        pytest.param(100, 50, [50, 50], id="even"),
        pytest.param(20, 6, [6, 6, 6, 2], id="remainder"),
        pytest.param(3, 50, [3], id="fewer-than-a-block"),
    ],
)
def test_blocks_add_up_to_the_calls(calls: int, block: int, sizes: list[int]) -> None:
    assert grpc_overhead._blocks(calls, block) == sizes


def test_blocks_rotate_within_a_round() -> None:
    got = list(grpc_overhead._block_orders(["a", "b"], 3))
    assert got == [["a", "b"], ["b", "a"], ["a", "b"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--calls", "0"], "--calls must be at least 1", id="calls"),
        pytest.param(["--rounds", "-1"], "--rounds must be at least 1", id="rounds"),
        pytest.param(["--eds-endpoints", "0"], "--eds-endpoints must be", id="eds"),
        pytest.param(["--block", "0"], "--block must be at least 1", id="block"),
    ],
)
def test_bad_arguments_name_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        grpc_overhead.parse_args(argv)
    assert message in capsys.readouterr().err


def test_quick_and_explicit_counts() -> None:
    opts, _ = grpc_overhead.parse_args(["--quick", "--calls", "50", "--no-envoy"])
    assert (opts.calls, opts.rounds, opts.envoy, opts.native_xds) == (50, 3, False, True)


def test_eds_only_skips_the_latency_rounds_and_memory_probes() -> None:
    opts, _ = grpc_overhead.parse_args(["--eds-only", "--eds-endpoints", "500"])
    assert (opts.latency, opts.memory_probes, opts.eds_endpoints) == (False, False, 500)


def test_eds_only_with_no_scale_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        grpc_overhead.parse_args(["--eds-only", "--no-scale"])
    assert "leave nothing to run" in capsys.readouterr().err


def test_spiffe_certificates_carry_only_the_uri_san(tmp_path: Path) -> None:
    certs = c.make_spiffe_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    for path, spiffe_id in (
        (certs.client_cert, c.SPIFFE_CLIENT),
        (certs.server_cert, c.SPIFFE_SERVER),
    ):
        leaf = x509.load_pem_x509_certificate(path.read_bytes())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id]
        assert san.get_values_for_type(x509.DNSName) == []
        assert leaf.issuer == ca.subject
        public_key = ca.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        leaf.verify_directly_issued_by(ca)
    assert certs.client_key.stat().st_mode & 0o077 == 0


def test_envoy_configs_pin_the_peer_spiffe_ids(tmp_path: Path) -> None:
    certs = c.make_spiffe_certs(tmp_path)
    server = json.dumps(c.envoy_server_sidecar(certs, "127.0.0.1:5000"))
    client = json.dumps(c.envoy_client_sidecar(certs, 6000))
    assert c.SPIFFE_CLIENT in server and '"require_client_certificate": true' in server
    assert c.SPIFFE_SERVER in client and '"port_value": 6000' in client
    for text in (server, client):
        assert str(certs.ca) in text and "http2_protocol_options" in text
        assert "0.0.0.0" not in text


def test_grpc_overhead_runs_end_to_end_with_tiny_counts() -> None:
    opts = grpc_overhead.Options(
        calls=20,
        rounds=2,
        block=6,
        warmup=5,
        envoy=False,
        native_xds=False,
        eds_endpoints=200,
        eds_updates=1,
        eds_idle_updates=1,
        scale_clusters=5,
        scale_endpoints_per_cluster=2,
        services=3,
        memory_repeats=2,
        quiet=True,
    )
    results = grpc_overhead.run(opts)
    sync = results["sync"]
    assert list(sync) == ["direct", "proxyless"]
    for row in sync.values():
        assert row["calls"] == 40 and len(row["rounds"]) == 2
        assert row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"]
    assert sync["direct"]["p50_ratio"] == 1.0
    assert list(results["aio"]) == ["aio-direct", "proxyless-aio"]
    assert results["aio"]["proxyless-aio"]["calls"] == 40
    eds = results["eds_update"]
    assert eds["endpoints"] == 200 and len(eds["updates"]) == 1
    assert len(eds["idle_applied_ms"]) == 1
    assert eds["call_errors"] == 0 and eds["calls_during_total"] >= 0
    assert eds["parse_ms"] > 0 and eds["apply_update_ms"] > 0
    memory = results["memory"]
    assert set(memory) == {"services_1", "services_3", "clusters_5"}
    assert memory["services_3"]["clusters"] == 6 and memory["services_3"]["endpoints"] == 18
    assert memory["clusters_5"]["endpoints"] == 10
    assert len(memory["services_3"]["added_mb_runs"]) == 2
    assert all(p["complete"] for p in memory.values())
    assert set(results["targets"]) == {
        "p50_ratio",
        "p99_ratio",
        "services_rss_mb",
        "eds_update_ms",
    }
    report = grpc_overhead.format_report(results)
    assert "proxyless-aio" in report and "EDS update of 200 endpoints" in report
    json.dumps(results)


def test_grpc_overhead_eds_only_runs_the_eds_part_alone() -> None:
    opts, _ = grpc_overhead.parse_args(
        ["--eds-only", "--no-envoy", "--no-native-xds", "--eds-endpoints", "200"]
    )
    opts = dataclasses.replace(opts, warmup=5, eds_updates=1, eds_idle_updates=1, quiet=True)
    results = grpc_overhead.run(opts)
    assert "sync" not in results and "aio" not in results and "memory" not in results
    eds = results["eds_update"]
    assert eds["endpoints"] == 200 and eds["call_errors"] == 0
    assert set(results["targets"]) == {"eds_update_ms"}
    report = grpc_overhead.format_report(results)
    assert "EDS update of 200 endpoints" in report and "p50" in report
    json.dumps(results)


def test_profile_sync_measures_every_step(tmp_path: Path) -> None:
    with profile_sync.world() as w:
        steps = profile_sync.step_times(w, loops=20)
        not_measured = {k: v for k, v in steps.items() if not isinstance(v, float)}
        assert not_measured == {}, "the request path moved; update bench/profile_sync.py"
        rounds = profile_sync.rpc_rounds(w, calls=20, rounds=1)
        assert set(rounds) == {"direct", "pooled endpoint channel", "proxyless"}
        situ = profile_sync.in_situ(w, calls=20, block=10)
        assert all(isinstance(v, float) for v in situ.values()), situ
        assert situ["no-op RPC: Python function calls per proxyless call"] > 1
        top = profile_sync.cprofile_calls(w, calls=20, top=5)
        assert len(top) == 5
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        "main (x.py:1);XdsChannel.run_unary (proxyless/grpc/_channel.py:9);"
        "_UnaryUnaryMultiCallable.__call__ (grpc/_channel.py:1) 90\n"
        "main (x.py:1);XdsChannel.run_unary (proxyless/grpc/_channel.py:9);"
        "resolve (routing/resolve.py:3) 10\n"
        "main (x.py:1);import (x.py:2) 500\n"
    )
    summary = profile_sync.summarize_collapsed(str(collapsed))
    assert "100 samples" in summary and "10.0% in proxyless" in summary
    assert "resolve (routing/resolve.py)" in summary
