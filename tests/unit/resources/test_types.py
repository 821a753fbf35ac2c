"""Resource types for the xDS client, decode results for bad bytes, and exported names."""

from __future__ import annotations

import importlib

import pytest
from envoy.config.listener.v3 import listener_pb2

import proxyless.resources as resources
from proxyless.resources import types
from proxyless.xds_client.resource_type import ResourceType

from . import builders as b


@pytest.mark.parametrize(
    ("rtype", "url", "short", "all_required"),
    [
        pytest.param(
            types.LISTENER,
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "LDS",
            True,
            id="lds",
        ),
        pytest.param(
            types.ROUTE_CONFIGURATION,
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "RDS",
            False,
            id="rds",
        ),
        pytest.param(
            types.CLUSTER,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "CDS",
            True,
            id="cds",
        ),
        pytest.param(
            types.CLUSTER_LOAD_ASSIGNMENT,
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "EDS",
            False,
            id="eds",
        ),
        pytest.param(
            types.SECRET,
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "SDS",
            False,
            id="sds",
        ),
    ],
)
def test_resource_types(rtype: ResourceType, url: str, short: str, all_required: bool) -> None:
    assert rtype.type_url == url
    assert rtype.short_name == short
    assert rtype.all_required_in_sotw is all_required
    assert types.BY_TYPE_URL[url] is rtype
    assert rtype in types.ALL_TYPES


@pytest.mark.parametrize("rtype", [pytest.param(t, id=t.short_name) for t in types.ALL_TYPES])
def test_garbage_bytes_do_not_raise(rtype: ResourceType) -> None:
    result = rtype.decode(b"\xff\xff\xff\xff")
    assert result.name is None
    assert result.value is None
    assert len(result.errors) == 1
    assert result.errors[0].startswith("could not decode envoy.")


@pytest.mark.parametrize("rtype", [pytest.param(t, id=t.short_name) for t in types.ALL_TYPES])
def test_empty_bytes_are_an_invalid_resource_without_name(rtype: ResourceType) -> None:
    result = rtype.decode(b"")
    assert result.name == ""
    assert not result.ok


def test_invalid_resource_keeps_its_name() -> None:
    result = types.LISTENER.decode(listener_pb2.Listener(name="bad").SerializeToString())
    assert result.name == "bad"
    assert result.value is None
    assert result.errors == ("api_listener: listener has no api_listener",)


def test_valid_resources_decode() -> None:
    assert types.LISTENER.decode(b.listener().SerializeToString()).ok
    assert types.ROUTE_CONFIGURATION.decode(b.route_config().SerializeToString()).ok
    assert types.CLUSTER.decode(b.eds_cluster().SerializeToString()).ok
    assert types.CLUSTER_LOAD_ASSIGNMENT.decode(b.assignment().SerializeToString()).ok


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(m, id=m)
        for m in (
            "proxyless.resources",
            "proxyless.resources.types",
            "proxyless.resources.model",
            "proxyless.resources.model.matchers",
            "proxyless.resources.model.regex",
            "proxyless.resources.model.filters",
            "proxyless.resources.model.route",
            "proxyless.resources.model.listener",
            "proxyless.resources.model.cluster",
            "proxyless.resources.model.endpoint",
            "proxyless.resources.model.security",
            "proxyless.resources.parse",
            "proxyless.resources.parse.regex",
        )
    ],
)
def test_exports_are_present(module: str) -> None:
    # (the order of __all__ is checked by ruff's RUF022)
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    for name in names:
        assert hasattr(mod, name), name


def test_package_exports_types() -> None:
    assert resources.ALL_TYPES is types.ALL_TYPES
