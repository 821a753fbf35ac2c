"""The LDS -> RDS -> CDS -> EDS chain and ``proxyless check`` against a real ADS server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.resources import (
    CLUSTER_URL,
    ENDPOINT_URL,
    LISTENER_URL,
    ROUTE_URL,
    cluster,
    endpoints,
    listener,
    route,
    route_config,
)


def _bootstrap(target: str) -> dict[str, object]:
    return {
        "xds_servers": [{"server_uri": target, "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "check-node", "metadata": {"GENERATOR": "grpc"}},
    }


def _serve_chain(ads: AdsServer, *, bad_cluster: bool = False) -> None:
    ads.set_resources(LISTENER_URL, {"svc:80": listener("svc:80", "svc-routes")})
    ads.set_resources(
        ROUTE_URL,
        {"svc-routes": route_config("svc-routes", "svc:80", [route(weighted={"a": 90, "b": 10})])},
    )
    b = cluster("b")
    if bad_cluster:
        b.lb_policy = b.MAGLEV
        b.maglev_lb_config.table_size.value = 10  # not prime: invalid
    ads.set_resources(CLUSTER_URL, {"a": cluster("a"), "b": b})
    ads.set_resources(
        ENDPOINT_URL,
        {
            "a": endpoints("a", ["127.0.0.1:5001", "127.0.0.1:5002"]),
            "b": endpoints("b", ["127.0.0.1:5003"]),
        },
    )


def test_config_watcher_publishes_the_whole_chain(ads):
    _serve_chain(ads)
    with Mesh(_bootstrap(ads.target)) as mesh:
        snap = mesh.config("svc:80").wait(5)
        assert snap is not None and snap.usable, snap
        assert set(snap.clusters) == {"a", "b"}
        eps = snap.clusters["a"].endpoints
        assert eps is not None
        assert [e.port for e in eps.priorities[0][0].endpoints] == [5001, 5002]
        # Two targets share one ADS stream.
        ads.set_resources(
            LISTENER_URL,
            {
                "svc:80": listener("svc:80", "svc-routes"),
                "other:80": listener("other:80", "svc-routes"),
            },
        )
        assert mesh.config("other:80").wait(5) is not None
        assert ads.streams_opened == 1


def test_config_watcher_marks_a_nacked_cluster_unusable(ads):
    _serve_chain(ads, bad_cluster=True)
    with Mesh(_bootstrap(ads.target)) as mesh:
        snap = mesh.config("svc:80").wait(5)
        assert snap is not None and snap.usable
        assert snap.clusters["a"].usable
        assert not snap.clusters["b"].usable
        assert "table_size" in str(snap.clusters["b"].error)


def _check(
    bootstrap: dict[str, object], target: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "proxyless.cli", "check", target, "--timeout", "5", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_check_reports_a_resolved_chain(ads):
    _serve_chain(ads)
    res = _check(_bootstrap(ads.target), "xds:///svc:80")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "$GRPC_XDS_BOOTSTRAP_CONFIG" in out and "'check-node'" in out
    assert f"{ads.target} - connected" in out
    for line in ("LDS", "RDS", "CDS", "EDS"):
        assert line in out
    assert "2 endpoints (2 usable)" in out
    assert "OK: the chain resolved" in out


def test_check_json_names_the_nacked_cluster(ads):
    _serve_chain(ads, bad_cluster=True)
    res = _check(_bootstrap(ads.target), "xds:///svc:80", "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    rows = {r["name"]: r for r in report["resources"]}
    assert rows["b"]["status"] == "NACKED" and "table_size" in rows["b"]["error"]
    assert rows["a"]["status"] == "ACKED"
    assert "b" in report["error"]


def test_check_says_not_connected_for_an_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _check(_bootstrap(f"127.0.0.1:{port}"), "xds:///svc:80")
    assert res.returncode == 1
    assert "not connected" in res.stdout.lower()
    assert "does not exist" not in res.stdout.lower()


@pytest.mark.parametrize(
    "env, needle",
    [
        pytest.param({}, "GRPC_XDS_BOOTSTRAP", id="no-bootstrap"),
        pytest.param(
            {"GRPC_XDS_BOOTSTRAP": "/nonexistent/b.json"}, "/nonexistent/b.json", id="missing-file"
        ),
        pytest.param(
            {"GRPC_XDS_BOOTSTRAP_CONFIG": "{not json"}, "GRPC_XDS_BOOTSTRAP_CONFIG", id="bad-json"
        ),
        pytest.param(
            {"GRPC_XDS_BOOTSTRAP_CONFIG": '{"xds_servers": []}'}, "xds_servers", id="no-servers"
        ),
    ],
)
def test_check_bad_bootstrap_is_a_clear_error(env, needle):
    res = subprocess.run(
        [sys.executable, "-m", "proxyless.cli", "check", "xds:///svc:80"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_check_bad_target_is_a_clear_error(ads):
    res = _check(_bootstrap(ads.target), "http://svc:80")
    assert res.returncode == 2
    assert "not an xDS target" in res.stderr
