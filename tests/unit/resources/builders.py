"""Proto builders for the resource parser tests: small valid resources to vary."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

ROUTER = router_pb2.Router()


def pack(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def ads() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource()
    source.ads.SetInParent()
    return source


def http_filter(name: str, config: Message, *, optional: bool = False) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config), is_optional=optional)


def router_filter() -> hcm_pb2.HttpFilter:
    return http_filter("envoy.filters.http.router", ROUTER)


def hcm(
    *,
    rds_name: str | None = "route-a",
    route_config: route_pb2.RouteConfiguration | None = None,
    filters: list[hcm_pb2.HttpFilter] | None = None,
) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager(
        http_filters=filters if filters is not None else [router_filter()]
    )
    if route_config is not None:
        manager.route_config.CopyFrom(route_config)
    elif rds_name is not None:
        manager.rds.CopyFrom(hcm_pb2.Rds(config_source=ads(), route_config_name=rds_name))
    return manager


def listener(name: str = "svc.example:80", manager: Message | None = None) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager or hcm())),
    )


def route(
    prefix: str = "/", cluster: str = "cluster-a", **action: Any
) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=prefix),
        route=route_components_pb2.RouteAction(cluster=cluster, **action),
    )


def virtual_host(
    name: str = "vh", domains: tuple[str, ...] = ("*",), routes: list[Any] | None = None, **kw: Any
) -> route_components_pb2.VirtualHost:
    return route_components_pb2.VirtualHost(
        name=name, domains=list(domains), routes=routes if routes is not None else [route()], **kw
    )


def route_config(
    name: str = "route-a", vhosts: list[Any] | None = None
) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name, virtual_hosts=vhosts if vhosts is not None else [virtual_host()]
    )


def eds_cluster(name: str = "cluster-a", service_name: str = "", **kw: Any) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, **kw)
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    cluster.eds_cluster_config.service_name = service_name
    return cluster


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def lb_endpoint(
    address: str = "10.0.0.1", port: int = 8080, health: int = 0, weight: int | None = None
) -> endpoint_components_pb2.LbEndpoint:
    ep = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket(address, port)),
        health_status=health,
    )
    if weight is not None:
        ep.load_balancing_weight.value = weight
    return ep


def locality(
    zone: str = "z1",
    endpoints: list[Any] | None = None,
    weight: int | None = 1,
    priority: int = 0,
) -> endpoint_components_pb2.LocalityLbEndpoints:
    lle = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region="r", zone=zone),
        lb_endpoints=endpoints if endpoints is not None else [lb_endpoint()],
        priority=priority,
    )
    if weight is not None:
        lle.load_balancing_weight.value = weight
    return lle


def assignment(
    name: str = "cluster-a", localities: list[Any] | None = None
) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=localities if localities is not None else [locality()]
    )
