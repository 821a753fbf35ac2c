"""grpcio's own xDS client routes through the embedded control plane like through istiod."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.interop.cp_interop_helpers import REVIEWS, V2, run_xds_client, share, write_bootstrap

from proxyless.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(90)


def test_native_xds_client_split_and_mobile_route(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    bootstrap = write_bootstrap(control_plane, tmp_path)
    plain = run_xds_client(bootstrap, f"xds:///{REVIEWS}", "--count", "2000")
    assert plain["errors"] == []
    counts = plain["counts"]
    assert sum(counts.values()) == 2000
    assert set(counts) == {"reviews-v1-a", "reviews-v1-b", V2}
    assert 7.0 <= share(counts, V2) <= 13.0, counts
    # the two v1 endpoints share v1's traffic round robin
    assert abs(counts["reviews-v1-a"] - counts["reviews-v1-b"]) <= 2, counts
    # gRPC's router matches application metadata, so the header is sent as metadata
    mobile = run_xds_client(
        bootstrap, f"xds:///{REVIEWS}", "--count", "50", "--metadata", "user-agent=Pixel Mobile"
    )
    assert mobile["errors"] == []
    assert mobile["counts"] == {V2: 50}
    assert control_plane.server.nacks() == []


def test_native_xds_client_short_name_alias(control_plane: ControlPlane, tmp_path: Path) -> None:
    """``xds:///reviews:9080`` resolves in the client's namespace, like a Kubernetes short name."""
    bootstrap = write_bootstrap(control_plane, tmp_path)
    result = run_xds_client(
        bootstrap, "xds:///reviews:9080", "--count", "20", "--metadata", "user-agent=Mobile"
    )
    assert result == {"counts": {V2: 20}, "errors": []}
    listeners = {
        name
        for r in control_plane.server.requests
        if r.type_url.endswith("Listener")
        for name in r.resource_names
    }
    assert listeners == {"reviews:9080"}
    assert control_plane.server.nacks() == []
