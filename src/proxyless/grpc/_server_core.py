"""What the sync and aio xDS-enabled servers share (gRFC A36, A41).

A :class:`ServerCore` owns the public ports (:class:`~._relay.PublicPort`),
their Listener watches (:class:`~._serving.PortWatch`), the private
directory of the internal unix-socket ports, and the table from an internal
peer name to the relayed connection. Per public port it adds three internal
ports to the grpcio server: plaintext, TLS and mTLS. The TLS ports use
``grpc.dynamic_ssl_server_credentials``: before each handshake grpcio asks
the port's fetcher, which returns the newest
:class:`~proxyless.security.server_credentials.ServerTls` of the Listener
when it changed (rotation: new handshakes present the new certificate).
Until real material exists the ports hold a throwaway self-signed
certificate that no connection is ever handed to: the relay refuses TLS
connections whose credentials are not ready.

:meth:`ServerCore.check` is what the interceptors run per call.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxyless.errors import BootstrapError, SecurityError, XdsConfigError
from proxyless.grpc._peer import peer_of_context
from proxyless.grpc._relay import PublicPort, Relayed
from proxyless.grpc._serving import MTLS, PLAIN, TLS, PortWatch, ServingState, ServingStatusCallback
from proxyless.mesh import Mesh

__all__ = ["ServerCore", "ServerSurface", "rewrap", "split_address"]

log = logging.getLogger("proxyless.server")


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[v6]:port"`` -> ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: expected host:port")
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and bare == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((bare, port))
    sock.listen(128)
    return sock


class ServerCore:
    """See the module docstring."""

    def __init__(self, mesh: Mesh | None, callback: ServingStatusCallback | None) -> None:
        self.mesh = mesh or Mesh.default()
        template = self.mesh.bootstrap.server_listener_resource_name_template
        if not template:
            raise BootstrapError(
                self.mesh.bootstrap.source,
                "server_listener_resource_name_template",
                "an xDS-enabled server needs it (gRFC A36)",
            )
        self._template = template
        self._callback = callback
        self._dir = ""  # made (mode 0700) when the first port is added
        self.table: dict[str, Relayed] = {}
        self.ports: list[PublicPort] = []
        self.watches: list[PortWatch] = []
        self._started = False

    def listener_name(self, host: str, port: int) -> str:
        """The Listener name of ``host:port`` (gRFC A36: the template's
        ``%s`` becomes the address the server listens on)."""
        bare = host.strip("[]")
        shown = f"[{bare}]" if ":" in bare else (bare or "0.0.0.0")
        return self._template.replace("%s", f"{shown}:{port}")

    def add_port(self, address: str, server: Any) -> int:
        """Bind ``address``, add its internal ports to ``server``; the port."""
        if self._started:
            raise RuntimeError("ports must be added before the server starts")
        host, port = split_address(address)
        sock = _bind(host, port)
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="proxyless-server-")
        n = len(self.ports)
        internal = {kind: f"{self._dir}/{kind}-{n}" for kind in (PLAIN, TLS, MTLS)}
        public = PublicPort(sock, address, self._dir, internal, self.table)
        server.add_insecure_port("unix:" + internal[PLAIN])
        for kind in (TLS, MTLS):
            server.add_secure_port("unix:" + internal[kind], self._credentials(public, kind))
        self.ports.append(public)
        return public.port

    def _credentials(self, public: PublicPort, kind: str) -> grpc.ServerCredentials:
        seen: list[object] = [None, None]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            state = public.state
            if state is None:
                return None
            try:
                tls = state.server_tls(kind)
            except (SecurityError, XdsConfigError):
                return None
            if seen[0] is tls.identity and seen[1] is tls.trust:
                return None  # unchanged: grpcio keeps the configuration it has
            seen[0], seen[1] = tls.identity, tls.trust
            roots = tls.trust.roots_pem if tls.trust is not None else None
            return grpc.ssl_server_certificate_configuration(
                [(tls.identity.key_pem, tls.identity.chain_pem)], root_certificates=roots
            )

        key, cert = _placeholder()
        initial = grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=cert if kind == MTLS else None
        )
        return grpc.dynamic_ssl_server_credentials(
            initial,
            fetch,  # type: ignore[arg-type]  # None means "no change" (grpcio docs)
            require_client_authentication=kind == MTLS,
        )

    def start(self) -> None:
        self._started = True
        for public in self.ports:
            host, _ = split_address(public.address)
            name = self.listener_name(host, public.port)
            watch = PortWatch(
                public.address,
                name,
                host,
                public.port,
                self.mesh.xds_client,
                self.mesh.secrets,
                public.set_state,
                self._callback,
            )
            self.watches.append(watch)
            public.start()
            log.info("server %s: waiting for listener %r", public.address, name)

    def stop_accepting(self) -> None:
        for public in self.ports:
            public.close(connections=False)

    def stop(self) -> None:
        for watch in self.watches:
            watch.close()
        for public in self.ports:
            public.close()

    def cleanup(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- per call ---------------------------------------------------------------------------
    def check(
        self, context: Any, method: str, metadata: Sequence[tuple[str, Any]] | None
    ) -> tuple[grpc.StatusCode, str] | None:
        """None if the call may go on, else the status to end it with."""
        relayed = self.table.get(context.peer())
        if relayed is None:
            return grpc.StatusCode.UNAVAILABLE, "the connection is not known to the server"
        state: ServingState | None = relayed.port.state
        if state is None:
            return grpc.StatusCode.UNAVAILABLE, "the server is not serving (no listener)"
        headers = _headers(metadata)

        def peer() -> Any:
            if relayed.kind == PLAIN:
                return None
            if relayed.peer_cert is None:
                relayed.peer_cert = peer_of_context(context)
            return relayed.peer_cert

        verdict = state.check(relayed.conn, relayed.chain, method, headers, peer)
        if verdict is None:
            return None
        code, message = verdict
        return getattr(grpc.StatusCode, code), message


def _headers(metadata: Sequence[tuple[str, Any]] | None) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, bytes):
            continue
        name = key.lower()
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


_PLACEHOLDER: tuple[bytes, bytes] | None = None


def _placeholder() -> tuple[bytes, bytes]:
    """A throwaway self-signed certificate and key (never presented: the
    relay hands TLS connections over only once real material is ready)."""
    global _PLACEHOLDER
    if _PLACEHOLDER is None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxyless placeholder")])
        now = _dt.datetime.now(_dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        _PLACEHOLDER = (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert.public_bytes(serialization.Encoding.PEM),
        )
    return _PLACEHOLDER


class ServerSurface:
    """What the sync and aio xDS-enabled servers share: ports bound through
    the core, handlers added to the grpcio server, serving state. Subclasses
    set ``_core`` and ``_server`` and add the blocking or async lifecycle."""

    _core: ServerCore
    _server: Any

    def add_port(self, address: str) -> int:
        """Bind ``address`` (``host:port``; port 0 picks one) and return the
        port. Security comes from the port's inbound Listener."""
        return self._core.add_port(address, self._server)

    def add_insecure_port(self, address: str) -> int:
        """Same as :meth:`add_port`: whether the port is plaintext, TLS or
        both is the Listener's decision, not the caller's."""
        return self.add_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        raise TypeError(
            "an xDS-enabled server takes its TLS settings from the inbound Listener; "
            "use add_port(address)"
        )

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._server.add_registered_method_handlers(service_name, method_handlers)

    @property
    def listener_names(self) -> list[str]:
        """The inbound Listener name of each port, in the order they were added."""
        return [w.listener_name for w in self._core.watches]

    def serving(self, port: int | None = None) -> bool:
        """Whether the port (default: every port) has a Listener and serves."""
        return all(w.serving for w in self._core.watches if port in (None, w.port))

    def __repr__(self) -> str:
        ports = ", ".join(p.address for p in self._core.ports)
        return f"{type(self).__name__}({ports})"


Behavior = Callable[..., Any]


def rewrap(
    handler: Any, unary: Callable[[Behavior], Behavior], stream: Callable[[Behavior], Behavior]
) -> Any:
    """``handler`` (a grpc ``RpcMethodHandler``) with its behavior wrapped:
    ``unary`` for the shapes with one response, ``stream`` for those with a
    response stream; serializers and shape kept."""
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), des, ser)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), des, ser)
