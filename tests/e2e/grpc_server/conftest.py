"""Fixtures of the xDS-enabled server tests: inbound Listeners in istiod's shape.

istiod's gRPC generator (``pilot/pkg/networking/grpcgen/lds.go``) answers a
request for ``xds.istio.io/grpc/lds/inbound/<host:port>`` with a Listener
named so, whose ``address`` is that host and port and whose filter chains
are ``inbound-mtls`` (STRICT: a ``DownstreamTlsContext`` with
``require_client_certificate``) or ``inbound-plaintext`` (DISABLE), without
``filter_chain_match``. Each chain has one ``inbound-hcm<suffix>``
HttpConnectionManager with an inline route configuration ``inbound``
(virtual host ``*``, one route on prefix ``/`` with ``non_forwarding_action``)
and the HTTP filters ``envoy.filters.http.rbac.DENY`` (if any DENY policy),
``envoy.filters.http.rbac`` (if any ALLOW policy) and the router.
:func:`inbound_listener` builds that shape; PERMISSIVE, which istiod
downgrades for gRPC, is the Envoy shape: both chains, told apart by
``transport_protocol`` ``tls`` / ``raw_buffer``. Certificates are inline
data sources (DevCA), or, with :func:`istiod_downstream_tls`, the
certificate-provider instance ``default`` istiod names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2, wrappers_pb2
from tests.e2e.conftest import bootstrap_for

import proxyless.grpc
from proxyless.controlplane.ca import DevCA, IssuedCertificate
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh
from proxyless.testing.resources import LISTENER_URL

TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"
TRUST_DOMAIN = "cluster.local"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/reviews"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/productpage"
METHOD = "/test.Identity/Who"


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def downstream_tls(ca: DevCA, cert: IssuedCertificate, *, require: bool = True) -> Any:
    """A DownstreamTlsContext with inline certificate, key and trusted CA."""
    common = tls_pb2.CommonTlsContext(
        tls_certificates=[
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cert.chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=cert.key_pem),
            )
        ],
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=ca.roots_pem)
        ),
    )
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=require),
    )


def rbac_filter(
    name: str, action: str, policies: Mapping[str, rbac_config_pb2.Policy]
) -> hcm_pb2.HttpFilter:
    rules = rbac_config_pb2.RBAC(
        action=getattr(rbac_config_pb2.RBAC, action), policies=dict(policies)
    )
    return hcm_pb2.HttpFilter(name=name, typed_config=_pack(rbac_pb2.RBAC(rules=rules)))


def inbound_chain(
    suffix: str,
    tls: Any | None,
    *,
    deny: Mapping[str, rbac_config_pb2.Policy] | None = None,
    allow: Mapping[str, rbac_config_pb2.Policy] | None = None,
    transport_protocol: str = "",
) -> listener_components_pb2.FilterChain:
    """One chain as istiod's ``buildInboundFilterChain`` makes it."""
    filters = []
    if deny:
        filters.append(rbac_filter("envoy.filters.http.rbac.DENY", "DENY", deny))
    if allow:
        filters.append(rbac_filter("envoy.filters.http.rbac", "ALLOW", allow))
    filters.append(
        hcm_pb2.HttpFilter(
            name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
        )
    )
    route_config = route_pb2.RouteConfiguration(
        name="inbound",
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="inbound|http|0",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        non_forwarding_action=route_components_pb2.NonForwardingAction(),
                    )
                ],
            )
        ],
    )
    hcm = hcm_pb2.HttpConnectionManager(route_config=route_config, http_filters=filters)
    chain = listener_components_pb2.FilterChain(
        name="inbound-" + suffix,
        filters=[
            listener_components_pb2.Filter(name="inbound-hcm" + suffix, typed_config=_pack(hcm))
        ],
    )
    if transport_protocol:
        chain.filter_chain_match.transport_protocol = transport_protocol
    if tls is not None:
        chain.transport_socket.name = "envoy.transport_sockets.tls"
        chain.transport_socket.typed_config.CopyFrom(_pack(tls))
    return chain


def inbound_listener(
    name: str, host: str, port: int, chains: Sequence[listener_components_pb2.FilterChain]
) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=host, port_value=port)
        ),
        filter_chains=list(chains),
    )


def strict(ca: DevCA, cert: IssuedCertificate, **rbac: Any) -> list[Any]:
    return [inbound_chain("mtls", downstream_tls(ca, cert), **rbac)]


def permissive(ca: DevCA, cert: IssuedCertificate, **rbac: Any) -> list[Any]:
    return [
        inbound_chain("mtls", downstream_tls(ca, cert), transport_protocol="tls", **rbac),
        inbound_chain("plaintext", None, transport_protocol="raw_buffer", **rbac),
    ]


def disable(**rbac: Any) -> list[Any]:
    return [inbound_chain("plaintext", None, **rbac)]


def principal_policy(*spiffe_ids: str, path: str | None = None) -> rbac_config_pb2.Policy:
    """Istio's shape: principals by exact SPIFFE ID (``authenticated.principal_name``)."""
    principals = [
        rbac_config_pb2.Principal(
            authenticated=rbac_config_pb2.Principal.Authenticated(
                principal_name={"exact": sid}  # type: ignore[arg-type]
            )
        )
        for sid in spiffe_ids
    ] or [rbac_config_pb2.Principal(any=True)]
    if path is None:
        permissions = [rbac_config_pb2.Permission(any=True)]
    else:
        permissions = [
            rbac_config_pb2.Permission(url_path={"path": {"exact": path}})  # type: ignore[arg-type]
        ]
    return rbac_config_pb2.Policy(permissions=permissions, principals=principals)


def _who(request: bytes, context: grpc.ServicerContext) -> bytes:
    who = proxyless.grpc.peer_identity(context)
    return (who or "plaintext").encode()


WHO_HANDLER = grpc.method_handlers_generic_handler(
    "test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
)


@pytest.fixture
def ca() -> DevCA:
    return DevCA(TRUST_DOMAIN)


@pytest.fixture
def mesh(ads: AdsServer) -> Iterator[Mesh]:
    m = Mesh(bootstrap_for(ads, "e2e-grpc-server", server_listener_resource_name_template=TEMPLATE))
    yield m
    m.close()


@pytest.fixture
def start_server(mesh: Mesh) -> Iterator[Callable[..., tuple[Any, int]]]:
    """``start_server()`` -> (server, port): the Who service on 127.0.0.1:0."""
    started: list[Any] = []

    def start(**kwargs: Any) -> tuple[Any, int]:
        server = proxyless.grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), mesh=mesh, handlers=[WHO_HANDLER], **kwargs
        )
        port = server.add_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return server, port

    yield start
    for server in started:
        server.stop(0).wait(5)


def publish(ads: AdsServer, port: int, chains: Sequence[Any] | None) -> str:
    """Serve (or with None remove) the inbound Listener of 127.0.0.1:port."""
    name = TEMPLATE % f"127.0.0.1:{port}"
    resource = None if chains is None else inbound_listener(name, "127.0.0.1", port, chains)
    ads.set_resource(LISTENER_URL, name, resource)
    return name


def istiod_downstream_tls() -> Any:
    """The DownstreamTlsContext istiod's gRPC generator sends for STRICT:
    certificate-provider instance ``default`` (certificates ``default`` and
    ``ROOTCA``) in both field generations, ``require_client_certificate``."""
    identity = common_pb2.CertificateProviderPluginInstance(
        instance_name="default", certificate_name="default"
    )
    roots = common_pb2.CertificateProviderPluginInstance(
        instance_name="default", certificate_name="ROOTCA"
    )
    legacy = tls_pb2.CommonTlsContext.CertificateProviderInstance
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=identity,
        tls_certificate_certificate_provider_instance=legacy(
            instance_name="default", certificate_name="default"
        ),
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                ca_certificate_provider_instance=roots
            ),
            validation_context_certificate_provider_instance=legacy(
                instance_name="default", certificate_name="ROOTCA"
            ),
        ),
    )
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
