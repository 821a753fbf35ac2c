"""The public port of an xDS-enabled server: accept, inspect, hand over, relay.

gRPC binds one credentials object per port, so it cannot choose TLS or
plaintext per connection, nor change its mind when the Listener changes.
A :class:`PublicPort` therefore owns the public socket. For each accepted
connection it (1) closes it at once while the port is not serving (gRFC
A36), (2) peeks at the first byte without consuming it — a TLS record
starts with ``0x16`` (handshake), an HTTP/2 connection preface with ``P`` —
(3) matches the filter chain on the connection's addresses and transport,
and (4) connects to the internal grpcio port of that chain's security
(plaintext, TLS, mTLS) and relays bytes both ways, two threads per
connection, until either side closes. TLS is never terminated here: the
handshake runs between the real client and grpcio, so grpcio's auth context
is the client's own.

The internal ports are unix sockets in a private directory (mode 0700, made
by the server), unreachable from the network and from other users. Each
relayed connection binds its own socket path there before connecting, so
grpcio reports it as the call's peer (``unix:<dir>/c<n>``) and the server
can look up the real client address and filter chain of every call.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxyless.grpc._chain_match import Connection
from proxyless.grpc._serving import ServingState, security_ready
from proxyless.resources.model.server_listener import FilterChain
from proxyless.security.peer import PeerCertificate

__all__ = ["PublicPort", "Relayed", "plain_ip"]

log = logging.getLogger("proxyless.server")

#: How long a new connection may stay silent before it is closed.
FIRST_BYTE_TIMEOUT = 10.0
_BUFFER = 256 * 1024
_TLS_HANDSHAKE = 0x16


@dataclass(eq=False, slots=True)
class Relayed:
    """One relayed connection: what calls on it are checked against."""

    port: PublicPort
    conn: Connection
    chain: FilterChain
    kind: str
    client: socket.socket
    inner: socket.socket
    peer_cert: PeerCertificate | None = None
    peer_pem: bytes | None = None
    _open: int = field(default=2)

    def close(self) -> None:
        for s in (self.client, self.inner):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class PublicPort:
    """Accepts on ``sock`` and relays to the internal ports (module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        private_dir: str,
        internal: dict[str, str],
        table: dict[str, Relayed],
    ) -> None:
        self.sock = sock
        self.address = address
        self.port: int = sock.getsockname()[1]
        self._dir = private_dir
        self._internal = internal
        self._table = table
        self.state: ServingState | None = None
        self._lock = threading.Lock()
        self._counter = 0
        self._conns: set[Relayed] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.on_accept_error: Callable[[str], None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"proxyless-server-{self.port}", daemon=True
        )
        self._thread.start()

    def set_state(self, state: ServingState | None) -> None:
        """The Listener changed: connections whose kind of security changed
        (plaintext, TLS, mTLS), or that no chain serves any more, are closed
        and their clients reconnect; the others keep going, on the chain
        they now match (a rotated certificate does not break them)."""
        with self._lock:
            self.state = state
            conns = list(self._conns)
        for r in conns:
            routed = state.route(r.conn) if state is not None else None
            if routed is None or routed[1] != r.kind:
                r.close()
            else:
                r.chain = routed[0]

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError as exc:
                if self._closed:
                    return
                # Out of descriptors or similar: do not spin.
                log.warning("server %s: accept failed: %s", self.address, exc)
                time.sleep(0.05)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            relayed = self._hand_over(client)
        except OSError as exc:
            log.debug("server %s: connection dropped before relaying: %s", self.address, exc)
            relayed = None
        except Exception:
            log.exception("server %s: cannot hand the connection over", self.address)
            relayed = None
        if relayed is None:
            _close(client)
            return
        t = threading.Thread(target=self._pump, args=(relayed, relayed.inner, client), daemon=True)
        t.start()
        self._pump(relayed, client, relayed.inner)

    def _hand_over(self, client: socket.socket) -> Relayed | None:
        state = self.state
        if state is None:
            return None  # not serving: accept and close (gRFC A36)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(FIRST_BYTE_TIMEOUT)
        first = client.recv(1, socket.MSG_PEEK)
        if not first:
            return None
        client.settimeout(None)
        local = client.getsockname()
        peer = client.getpeername()
        conn = Connection(
            local_ip=plain_ip(local[0]),
            local_port=local[1],
            peer_ip=plain_ip(peer[0]),
            peer_port=peer[1],
            transport="tls" if first[0] == _TLS_HANDSHAKE else "raw_buffer",
        )
        routed = state.route(conn)
        if routed is None:
            log.info("server %s: no filter chain matches %s; closing", self.address, conn)
            return None
        chain, kind = routed
        problem = security_ready(state, kind)
        if problem is not None:
            log.warning("server %s: refusing %s: %s", self.address, conn, problem)
            return None
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._counter += 1
            name = os.path.join(self._dir, f"c{self.port}-{self._counter}")
        try:
            inner.bind(name)
            inner.connect(self._internal[kind])
        except OSError:
            _close(inner)
            raise
        finally:
            try:
                os.unlink(name)
            except OSError:
                pass
        relayed = Relayed(self, conn, chain, kind, client, inner)
        with self._lock:
            if self._closed or self.state is None:
                _close(inner)
                return None
            self._conns.add(relayed)
            self._table["unix:" + name] = relayed
        return relayed

    def _pump(self, relayed: Relayed, src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(_BUFFER)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            relayed._open -= 1
            done = relayed._open == 0
            if done:
                self._conns.discard(relayed)
                for key in [k for k, v in self._table.items() if v is relayed]:
                    del self._table[key]
        if done:
            _close(relayed.client)
            _close(relayed.inner)
        elif src is relayed.inner:
            # grpcio closed its side: the client's reads end too.
            relayed.close()

    def close(self, connections: bool = True) -> None:
        """Stop accepting; and close every relayed connection if ``connections``."""
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            _close(self.sock)
        if not connections:
            return
        with self._lock:
            conns = list(self._conns)
        for r in conns:
            r.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


def plain_ip(address: str) -> str:
    """An address as filter chains and RBAC match it: an IPv4 client of a
    dual-stack (``[::]``) socket shows as ``::ffff:a.b.c.d`` and is matched
    as ``a.b.c.d``; an IPv6 zone is dropped."""
    bare = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _close(s: socket.socket) -> None:
    try:
        s.close()
    except OSError:
        pass
