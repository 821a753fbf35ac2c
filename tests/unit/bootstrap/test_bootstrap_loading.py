"""Loading real-world bootstraps, discovery through the environment, legacy flags."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import proxyless.bootstrap
from proxyless.bootstrap import (
    Bootstrap,
    ChannelCreds,
    Locality,
    legacy_flag_warnings,
    load_bootstrap,
)
from proxyless.errors import BootstrapError

ISTIO_NODE_ID = "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local"

# What istio-agent writes for a pod using the grpc-agent template
# (pkg/istio-agent/grpcxds/grpc_bootstrap.go in istio/istio).
ISTIO_AGENT: dict[str, Any] = {
    "xds_servers": [
        {
            "server_uri": "unix:///etc/istio/proxy/XDS",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ],
    "node": {
        "id": ISTIO_NODE_ID,
        "metadata": {
            "ANNOTATIONS": {"inject.istio.io/templates": "grpc-agent"},
            "CLUSTER_ID": "Kubernetes",
            "ENVOY_PROMETHEUS_PORT": 15090,
            "GENERATOR": "grpc",
            "INSTANCE_IPS": "10.0.0.1",
            "ISTIO_VERSION": "1.22.0",
            "LABELS": {"app": "reviews", "version": "v1"},
            "MESH_ID": "cluster.local",
            "NAME": "pod",
            "NAMESPACE": "ns",
            "PILOT_SAN": ["istiod.istio-system.svc"],
            "PROXY_CONFIG": {"holdApplicationUntilProxyStarts": True, "proxyAdminPort": 15000},
            "SERVICE_ACCOUNT": "default",
            "WORKLOAD_NAME": "reviews-v1",
        },
        "locality": {},
        "UserAgentVersionType": None,
    },
    "certificate_providers": {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": "/var/lib/istio/data/cert-chain.pem",
                "private_key_file": "/var/lib/istio/data/key.pem",
                "ca_certificate_file": "/var/lib/istio/data/root-cert.pem",
                "refresh_interval": "900s",
            },
        }
    },
    "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
}

TD_AUTHORITY = "traffic-director-global.xds.googleapis.com"

# What Traffic Director's bootstrap generator (td-grpc-bootstrap) writes.
TRAFFIC_DIRECTOR: dict[str, Any] = {
    "xds_servers": [
        {
            "server_uri": "trafficdirector.googleapis.com:443",
            "channel_creds": [{"type": "google_default"}],
            "server_features": ["xds_v3", "ignore_resource_deletion"],
        }
    ],
    "node": {
        "id": "projects/123456789012/networks/default/nodes/5f0c6f3e-1d2b-4c1a-9b7e-0a1b2c3d4e5f",
        "cluster": "cluster",
        "metadata": {
            "INSTANCE_IP": "10.128.0.7",
            "TRAFFICDIRECTOR_GCP_PROJECT_NUMBER": "123456789012",
            "TRAFFICDIRECTOR_NETWORK_NAME": "default",
        },
        "locality": {"zone": "us-central1-a"},
    },
    "certificate_providers": {
        "google_cloud_private_spiffe": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": "/var/run/gke-spiffe/certs/certificates.pem",
                "private_key_file": "/var/run/gke-spiffe/certs/private_key.pem",
                "ca_certificate_file": "/var/run/gke-spiffe/certs/ca_certificates.pem",
                "refresh_interval": "600s",
            },
        }
    },
    "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
    "client_default_listener_resource_name_template": (
        f"xdstp://{TD_AUTHORITY}/envoy.config.listener.v3.Listener/%s"
    ),
    "authorities": {
        TD_AUTHORITY: {
            "xds_servers": [
                {
                    "server_uri": "dns:///directpath-pa.googleapis.com",
                    "channel_creds": [{"type": "google_default"}],
                    "server_features": ["xds_v3", "ignore_resource_deletion"],
                }
            ]
        }
    },
}

# Hand-written, for the embedded control plane.
EMBEDDED: dict[str, Any] = {
    "xds_servers": [
        {
            "server_uri": "127.0.0.1:15010",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ],
    "node": {"id": "reviews-1", "cluster": "reviews", "metadata": {"GENERATOR": "grpc"}},
}


def write(tmp_path: Path, document: Any, name: str = "bootstrap.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_istio_agent_bootstrap(tmp_path: Path) -> None:
    path = write(tmp_path, ISTIO_AGENT)
    b = load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP": str(path)})

    assert b.source == f"$GRPC_XDS_BOOTSTRAP={path}"
    (server,) = b.xds_servers
    assert server.server_uri == "unix:///etc/istio/proxy/XDS"
    assert server.channel_creds == ChannelCreds("insecure")
    assert server.server_features == frozenset({"xds_v3"})
    assert not server.ignore_resource_deletion
    assert not server.fail_on_data_errors
    assert b.node.id == ISTIO_NODE_ID
    assert b.node.cluster == ""
    assert b.node.locality == Locality()
    assert b.node.metadata["GENERATOR"] == "grpc"
    assert b.node.metadata_json() == ISTIO_AGENT["node"]["metadata"]
    provider = b.certificate_providers["default"]
    assert provider.plugin_name == "file_watcher"
    assert dict(provider.config) == ISTIO_AGENT["certificate_providers"]["default"]["config"]
    assert b.server_listener_resource_name_template == "xds.istio.io/grpc/lds/inbound/%s"
    assert b.client_default_listener_resource_name_template == "%s"
    assert b.authorities == {}
    assert b.listener_resource_name(None, "reviews.ns.svc.cluster.local:9080") == (
        "reviews.ns.svc.cluster.local:9080"
    )
    assert b.servers_for_authority(None) == b.xds_servers


def test_traffic_director_bootstrap() -> None:
    b = load_bootstrap(TRAFFIC_DIRECTOR)

    assert b.source == "<dict>"
    (server,) = b.xds_servers
    assert server.channel_creds.type == "google_default"
    assert server.ignore_resource_deletion
    assert b.node.cluster == "cluster"
    assert b.node.locality == Locality(zone="us-central1-a")
    assert b.listener_resource_name(None, "helloworld-gke:8000") == (
        f"xdstp://{TD_AUTHORITY}/envoy.config.listener.v3.Listener/helloworld-gke:8000"
    )
    authority = b.authorities[TD_AUTHORITY]
    assert authority.client_listener_resource_name_template == (
        f"xdstp://{TD_AUTHORITY}/envoy.config.listener.v3.Listener/%s"
    )
    (directpath,) = b.servers_for_authority(TD_AUTHORITY)
    assert directpath.server_uri == "dns:///directpath-pa.googleapis.com"
    assert set(b.certificate_providers) == {"google_cloud_private_spiffe"}


def test_embedded_control_plane_bootstrap_inline() -> None:
    b = load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(EMBEDDED)})
    assert b.source == "$GRPC_XDS_BOOTSTRAP_CONFIG"
    assert b.xds_servers[0].server_uri == "127.0.0.1:15010"
    assert b.node.locality is None
    assert b.server_listener_resource_name_template is None


def test_tls_channel_creds_and_server_features() -> None:
    tls = {
        "ca_certificate_file": "/certs/ca.pem",
        "certificate_file": "/certs/cert.pem",
        "private_key_file": "/certs/key.pem",
        "refresh_interval": "60s",
    }
    doc = {
        "xds_servers": [
            {
                "server_uri": "dns:///xds.example.com:443",
                "channel_creds": [{"type": "unknown_creds"}, {"type": "tls", "config": tls}],
                "server_features": ["xds_v3", "fail_on_data_errors"],
            }
        ]
    }
    (server,) = load_bootstrap(doc).xds_servers
    assert server.channel_creds.type == "tls"
    assert dict(server.channel_creds.config) == tls
    assert server.fail_on_data_errors
    assert server.key[:2] == ("dns:///xds.example.com:443", "tls")
    hash(server)


def test_first_supported_creds_wins_and_later_entries_are_not_read() -> None:
    doc = {
        "xds_servers": [
            {
                "server_uri": "127.0.0.1:15010",
                "channel_creds": [{"type": "xds"}, {"type": "insecure"}, "not even an object"],
            }
        ]
    }
    assert load_bootstrap(doc).xds_servers[0].channel_creds == ChannelCreds("insecure")


def test_user_agent_fields_in_node_are_ignored() -> None:
    doc = dict(EMBEDDED)
    doc["node"] = {
        "id": "n",
        "user_agent_name": 42,
        "user_agent_version": ["x"],
        "client_features": "envoy.lb.does_not_support_overprovisioning",
    }
    node = load_bootstrap(doc).node
    assert node.id == "n"
    assert node.metadata == {}


METADATA: dict[str, Any] = {
    "string": "v",
    "empty_string": "",
    "int": 15090,
    "big_int": 2**70,
    "negative": -3,
    "float": 1.5,
    "exponent": 1e100,
    "true": True,
    "false": False,
    "null": None,
    "list": [1, "two", [3.0, False], {"k": None}],
    "empty_list": [],
    "object": {"nested": {"deeper": [True, {"x": 0}]}},
    "empty_object": {},
    "unicode": "café ✓",
}


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("dict", id="from-dict"),
        pytest.param("file", id="from-file"),
        pytest.param("inline", id="from-inline-env"),
    ],
)
def test_metadata_preserved_exactly(tmp_path: Path, how: str) -> None:
    doc = {**EMBEDDED, "node": {"id": "n", "metadata": METADATA}}
    if how == "dict":
        b = load_bootstrap(doc)
    elif how == "file":
        b = load_bootstrap(write(tmp_path, doc))
    else:
        b = load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(doc)})
    # json.dumps tells True from 1 and 1.0 from 1, and keeps key order.
    assert json.dumps(b.node.metadata_json()) == json.dumps(METADATA)
    assert b.node.metadata["list"][2] == (3.0, False)


def test_metadata_is_a_read_only_copy() -> None:
    metadata: dict[str, Any] = {"a": {"b": [1]}}
    b = load_bootstrap({**EMBEDDED, "node": {"id": "n", "metadata": metadata}})
    metadata["a"]["b"].append(2)
    metadata["c"] = 1
    assert b.node.metadata_json() == {"a": {"b": [1]}}
    with pytest.raises(TypeError):
        b.node.metadata["c"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        b.node.metadata["a"]["b"] = 2
    fresh = b.node.metadata_json()
    fresh["a"]["b"].append(3)
    assert b.node.metadata_json() == {"a": {"b": [1]}}


# -- discovery through the environment ---------------------------------------


def test_file_variable_wins_over_inline(tmp_path: Path) -> None:
    path = write(tmp_path, ISTIO_AGENT)
    b = load_bootstrap(
        environ={"GRPC_XDS_BOOTSTRAP": str(path), "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(EMBEDDED)}
    )
    assert b.source == f"$GRPC_XDS_BOOTSTRAP={path}"
    assert b.xds_servers[0].server_uri == "unix:///etc/istio/proxy/XDS"


@pytest.mark.parametrize(
    "content, fragment",
    [
        pytest.param(None, "No such file or directory", id="missing-file"),
        pytest.param("{not json", "malformed JSON at line 1 column 2", id="malformed-file"),
        pytest.param({"xds_servers": []}, "is empty", id="invalid-file"),
    ],
)
def test_bad_file_never_falls_back_to_inline(tmp_path: Path, content: Any, fragment: str) -> None:
    path = tmp_path / "bootstrap.json" if content is None else write(tmp_path, content)
    env = {"GRPC_XDS_BOOTSTRAP": str(path), "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(EMBEDDED)}
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(environ=env)
    assert info.value.source == f"$GRPC_XDS_BOOTSTRAP={path}"
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_from_env_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "bootstrap.json"
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP": str(path)})
    message = str(info.value)
    assert f"$GRPC_XDS_BOOTSTRAP={path}" in message
    assert "No such file or directory" in message
    assert "point GRPC_XDS_BOOTSTRAP at a readable bootstrap file" in message


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="neither-set"),
        pytest.param({"GRPC_XDS_BOOTSTRAP": "", "GRPC_XDS_BOOTSTRAP_CONFIG": ""}, id="both-empty"),
    ],
)
def test_no_bootstrap_names_both_variables(environ: dict[str, str]) -> None:
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(environ=environ)
    message = str(info.value)
    assert "GRPC_XDS_BOOTSTRAP " in message
    assert "GRPC_XDS_BOOTSTRAP_CONFIG" in message
    assert "set one of them" in message


def test_empty_file_variable_means_unset() -> None:
    b = load_bootstrap(
        environ={"GRPC_XDS_BOOTSTRAP": "", "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(EMBEDDED)}
    )
    assert b.source == "$GRPC_XDS_BOOTSTRAP_CONFIG"


@pytest.mark.parametrize(
    "as_path",
    [pytest.param(True, id="pathlike"), pytest.param(False, id="str")],
)
def test_explicit_path_ignores_environment(tmp_path: Path, as_path: bool) -> None:
    path = write(tmp_path, EMBEDDED)
    b = load_bootstrap(path if as_path else str(path), environ={"GRPC_XDS_BOOTSTRAP": "/nope"})
    assert b.source == str(path)
    assert b.node.id == "reviews-1"


def test_explicit_dict_ignores_environment() -> None:
    b = load_bootstrap(EMBEDDED, environ={"GRPC_XDS_BOOTSTRAP": "/nope"})
    assert b.source == "<dict>"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(EMBEDDED).encode())
    assert load_bootstrap(path).node.id == "reviews-1"


# -- legacy flags --------------------------------------------------------------

LEGACY_FLAGS = [
    "GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT",
    "GRPC_XDS_EXPERIMENTAL_ENABLE_RETRY",
    "GRPC_XDS_EXPERIMENTAL_FAULT_INJECTION",
    "GRPC_XDS_EXPERIMENTAL_RBAC",
    "GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG",
    "GRPC_EXPERIMENTAL_ENABLE_OUTLIER_DETECTION",
]


@pytest.mark.parametrize("flag", [pytest.param(f, id=f) for f in LEGACY_FLAGS])
@pytest.mark.parametrize(
    "value, warns",
    [
        pytest.param("false", True, id="false"),
        pytest.param(" FALSE ", True, id="FALSE"),
        pytest.param("true", False, id="true"),
        pytest.param("", False, id="empty"),
    ],
)
def test_legacy_flags(flag: str, value: str, warns: bool) -> None:
    warnings = legacy_flag_warnings({flag: value})
    if warns:
        assert len(warnings) == 1
        assert warnings[0].startswith(f"{flag}=false is ignored")
    else:
        assert warnings == []


def test_load_bootstrap_logs_legacy_flags(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "GRPC_XDS_EXPERIMENTAL_RBAC": "false",
        "GRPC_XDS_EXPERIMENTAL_ENABLE_RETRY": "false",
        "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(EMBEDDED),
    }
    with caplog.at_level(logging.WARNING, logger="proxyless.bootstrap"):
        load_bootstrap(environ=env)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert any("GRPC_XDS_EXPERIMENTAL_RBAC=false" in m for m in warned)
    assert any("GRPC_XDS_EXPERIMENTAL_ENABLE_RETRY=false" in m for m in warned)


# -- summary and exports -----------------------------------------------------


def test_describe_and_repr(tmp_path: Path) -> None:
    b = load_bootstrap(TRAFFIC_DIRECTOR)
    text = b.describe()
    assert text.splitlines()[0] == "xDS bootstrap from <dict>"
    assert f"node id: {TRAFFIC_DIRECTOR['node']['id']}" in text
    assert (
        "xds server: trafficdirector.googleapis.com:443 "
        "(creds: google_default; features: ignore_resource_deletion, xds_v3)"
    ) in text
    assert f"authority '{TD_AUTHORITY}'" in text
    assert "dns:///directpath-pa.googleapis.com" in text
    assert "certificate provider 'google_cloud_private_spiffe': file_watcher" in text
    assert repr(b) == (
        "Bootstrap(source='<dict>', node_id='projects/123456789012/networks/default/nodes/"
        "5f0c6f3e-1d2b-4c1a-9b7e-0a1b2c3d4e5f', "
        "xds_servers=[trafficdirector.googleapis.com:443], "
        f"authorities=[{TD_AUTHORITY}])"
    )
    assert repr(b.xds_servers[0]) == (
        "XdsServer('trafficdirector.googleapis.com:443', creds=google_default, "
        "features=[ignore_resource_deletion,xds_v3])"
    )
    istio = load_bootstrap(write(tmp_path, ISTIO_AGENT))
    assert "authorit" not in istio.describe()
    assert "server listener name template: xds.istio.io/grpc/lds/inbound/%s" in istio.describe()


def test_bootstrap_can_be_built_directly() -> None:
    from proxyless.bootstrap import XdsServer

    b = Bootstrap(xds_servers=(XdsServer("127.0.0.1:15010", ChannelCreds("insecure")),))
    assert b.node.id == ""
    assert b.client_default_listener_resource_name_template == "%s"
    assert b.source == "<dict>"
    assert b.listener_resource_name(None, "x") == "x"


def test_exports() -> None:
    assert set(proxyless.bootstrap.__all__) == {
        "Authority",
        "Bootstrap",
        "CertificateProviderInstance",
        "ChannelCreds",
        "Locality",
        "Node",
        "XdsServer",
        "legacy_flag_warnings",
        "load_bootstrap",
    }
    for name in proxyless.bootstrap.__all__:
        assert hasattr(proxyless.bootstrap, name)
