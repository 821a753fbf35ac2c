"""Local forwarders: grpcio's plaintext HTTP/2 in, verified mTLS out.

A :class:`Forwarder` is a unix socket standing for one endpoint of a TLS
cluster at one version of the cluster's
:class:`~proxyless.security.credentials.ClientTls`. grpcio's channel to the
endpoint connects to it; every connection accepted becomes a TCP connection
to the endpoint carrying a :class:`~proxyless.grpc._tls_relay.TlsRelay`
(the handshake, the SAN check before the first application byte, then
bytes both ways).

Who can reach the socket: it lives in a directory only this user can enter
(``0700``, made by :func:`tempfile.mkdtemp`), and every accepted connection's
peer credentials (``SO_PEERCRED``) must name this process, so another
process of the same user cannot borrow the workload's identity through it;
a connection from anyone else is closed unread. The socket is removed when
its pooled channel closes, the directory when the process exits.

All forwarders of a process share one :class:`ForwarderHub` (:func:`hub`):
one thread and one selector accept connections and relay all of them
(non-blocking sockets, memory BIOs). A hub in ``"thread"`` mode relays each
connection on a thread of its own instead; ``bench/grpc_mtls.py`` measures
both: per-call latency, new connections and 1 MiB messages cost the same
within noise, so the data path uses the one-thread hub, whose thread count
does not grow with the number of connections. A failed handshake or identity check is kept
on the forwarder (:attr:`Forwarder.last_error`) until a later connection is
verified, so the failed call can say what went wrong (:mod:`._tls`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import logging
import os
import selectors
import shutil
import socket
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from typing import Literal

from proxyless.errors import CertificateError, SecurityError
from proxyless.grpc._tls_relay import READ_SIZE, TlsRelay
from proxyless.security.credentials import ClientTls

__all__ = ["Forwarder", "ForwarderHub", "RelayMode", "hub"]

log = logging.getLogger("proxyless.grpc.tls")

RelayMode = Literal["hub", "thread"]
_R, _W = selectors.EVENT_READ, selectors.EVENT_WRITE
_ids = itertools.count(1)


class Forwarder:
    """One endpoint at one ``ClientTls`` version (see the module docstring)."""

    __slots__ = ("_hub", "_sock", "endpoint", "handshakes", "last_error", "path", "tls")

    def __init__(self, hub: ForwarderHub, tls: ClientTls, endpoint: str, path: str) -> None:
        self._hub = hub
        self.tls = tls
        self.endpoint = endpoint
        self.path = path
        #: the last failed handshake or identity check, until one succeeds
        self.last_error: SecurityError | None = None
        #: verified handshakes so far
        self.handshakes = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(64)
        self._sock.setblocking(False)

    @property
    def target(self) -> str:
        """The grpcio target that reaches this forwarder."""
        return "unix:" + self.path

    def close(self) -> None:
        """Stop accepting (connections already relayed end with grpcio's)."""
        self._hub.call_soon(self._close_now)

    def _close_now(self) -> None:
        self._hub.unregister(self._sock)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __repr__(self) -> str:
        return f"<Forwarder {self.endpoint} {self.tls!r} at {self.path}>"


class _Conn:
    """One relayed connection: grpcio's socket, the endpoint's, the relay."""

    __slots__ = (
        "connecting",
        "forwarder",
        "local",
        "local_events",
        "relay",
        "up",
        "up_events",
        "verified",
    )

    def __init__(self, forwarder: Forwarder, local: socket.socket, up: socket.socket) -> None:
        self.forwarder = forwarder
        self.local = local
        self.up = up
        self.relay = TlsRelay(forwarder.tls, forwarder.endpoint)
        self.connecting = True
        self.verified = False
        #: what each socket is registered for (0: not registered)
        self.up_events = _W
        self.local_events = _R


class _Loop:
    """A selector and the connections it drives."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.conns: set[_Conn] = set()
        # every read lands here (one loop runs on one thread): no buffer per read
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)

    def add(self, conn: _Conn) -> None:
        self.conns.add(conn)
        self.sel.register(conn.up, _W, (conn, True))
        self.sel.register(conn.local, _R, (conn, False))

    def service(self, conn: _Conn, upstream: bool, events: int) -> None:
        relay = conn.relay
        if upstream:
            if conn.connecting:
                err = conn.up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                conn.connecting = False
                if err:
                    self._fail(
                        conn,
                        CertificateError(
                            f"cluster {conn.forwarder.tls.cluster!r}: cannot connect to "
                            f"endpoint {conn.forwarder.endpoint} ({os.strerror(err)})"
                        ),
                    )
                    return
            elif events & _R:
                data = _recv(conn.up, self._buf, self._view)
                if data is not None:
                    relay.from_upstream(data)
        elif events & _R:
            data = _recv(conn.local, self._buf, self._view)
            if data is not None:
                relay.from_local(data)
        self.settle(conn)

    def settle(self, conn: _Conn) -> None:
        """Send what can be sent now, then wait for what is needed next."""
        relay = conn.relay
        if relay.error is not None:
            self._fail(conn, relay.error)
            return
        if relay.verified and not conn.verified:
            conn.verified = True
            conn.forwarder.last_error = None
            conn.forwarder.handshakes += 1
        if not conn.connecting and relay.to_upstream:
            _send(conn.up, relay.to_upstream)
        if relay.to_local:
            _send(conn.local, relay.to_local)
        if relay.closed and not relay.to_local and not relay.to_upstream:
            self._drop(conn)
            return
        up_events = 0
        if conn.connecting or relay.to_upstream:
            up_events |= _W
        if not conn.connecting and relay.wants_upstream():
            up_events |= _R
        local_events = (_W if relay.to_local else 0) | (_R if relay.wants_local() else 0)
        if up_events != conn.up_events:
            self._set(conn.up, conn.up_events, up_events, (conn, True))
            conn.up_events = up_events
        if local_events != conn.local_events:
            self._set(conn.local, conn.local_events, local_events, (conn, False))
            conn.local_events = local_events

    def _set(self, sock: socket.socket, old: int, new: int, data: tuple[_Conn, bool]) -> None:
        if not old:
            self.sel.register(sock, new, data)
        elif not new:
            self.sel.unregister(sock)
        else:
            self.sel.modify(sock, new, data)

    def _fail(self, conn: _Conn, error: SecurityError) -> None:
        conn.forwarder.last_error = error
        log.warning("%s", error)
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        for sock in (conn.local, conn.up):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sock)
            sock.close()


def _recv(sock: socket.socket, buf: bytearray, view: memoryview) -> memoryview | None:
    """The bytes read into ``buf`` (valid until the next read; empty at end
    of stream or on a reset), None: none yet."""
    try:
        n = sock.recv_into(buf)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        n = 0
    return view[:n]


def _send(sock: socket.socket, buf: bytearray) -> None:
    try:
        n = sock.send(buf)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        buf.clear()
        return
    del buf[:n]


def _peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def _upstream_address(endpoint: str) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        info = socket.getaddrinfo(
            host, int(port), family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        info = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)
    fam, _, _, _, addr = info[0]
    return fam, addr  # type: ignore[return-value]


class ForwarderHub:
    """The thread that accepts (and in ``"hub"`` mode relays) every
    forwarder's connections (see the module docstring)."""

    def __init__(self, mode: RelayMode = "hub") -> None:
        self.mode: RelayMode = mode
        self.directory = tempfile.mkdtemp(prefix="proxyless-tls-")
        os.chmod(self.directory, 0o700)
        self._loop = _Loop()
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._loop.sel.register(self._wake_r, _R, None)
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="proxyless-tls", daemon=True)
        self._thread.start()

    def open(self, tls: ClientTls, endpoint: str) -> Forwarder:
        """A new forwarder to ``endpoint`` with ``tls``."""
        path = os.path.join(self.directory, f"{next(_ids)}.sock")
        fwd = Forwarder(self, tls, endpoint, path)
        self.call_soon(lambda: self._register(fwd))
        return fwd

    def _register(self, fwd: Forwarder) -> None:
        self._loop.sel.register(fwd._sock, _R, fwd)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._calls.append(fn)
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._loop.sel.unregister(sock)

    def close(self) -> None:
        """Stop the thread and remove the directory (tests, benchmarks)."""
        self._stopped = True
        self.call_soon(lambda: None)
        self._thread.join(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        loop = self._loop
        while not self._stopped:
            for key, events in loop.sel.select():
                data = key.data
                if data is None:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                elif isinstance(data, Forwarder):
                    try:
                        self._accept(data)
                    except Exception:
                        log.exception("forwarder for %s: accepting failed", data.endpoint)
                else:
                    conn, upstream = data
                    try:
                        loop.service(conn, upstream, events)
                    except Exception:
                        log.exception("relay to %s failed", conn.forwarder.endpoint)
                        loop._drop(conn)
            while self._calls:
                fn = self._calls.popleft()
                try:
                    fn()
                except Exception:
                    log.exception("forwarder task failed")
        loop.sel.close()

    def _accept(self, fwd: Forwarder) -> None:
        while True:
            try:
                local, _ = fwd._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                pid = _peer_pid(local)
            except OSError:
                pid = -1
            if pid != os.getpid():
                log.warning(
                    "forwarder for %s: refused a connection from process %d (only this "
                    "process may use it)",
                    fwd.endpoint,
                    pid,
                )
                local.close()
                continue
            self._start(fwd, local)

    def _start(self, fwd: Forwarder, local: socket.socket) -> None:
        local.setblocking(False)
        try:
            family, addr = _upstream_address(fwd.endpoint)
            up = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:
            fwd.last_error = CertificateError(
                f"cluster {fwd.tls.cluster!r}: cannot connect to endpoint {fwd.endpoint} ({exc})"
            )
            local.close()
            return
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = up.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            fwd.last_error = CertificateError(
                f"cluster {fwd.tls.cluster!r}: cannot connect to endpoint {fwd.endpoint} "
                f"({os.strerror(err)})"
            )
            local.close()
            up.close()
            return
        try:
            conn = _Conn(fwd, local, up)
        except SecurityError as exc:  # OpenSSL refused the material
            fwd.last_error = exc
            log.warning("%s", exc)
            local.close()
            up.close()
            return
        if self.mode == "hub":
            self._loop.add(conn)
        else:
            threading.Thread(
                target=_relay_thread, args=(conn,), name="proxyless-tls-conn", daemon=True
            ).start()


def _relay_thread(conn: _Conn) -> None:
    loop = _Loop()
    loop.add(conn)
    try:
        while loop.conns:
            for key, events in loop.sel.select():
                c, upstream = key.data
                loop.service(c, upstream, events)
    except Exception:
        log.exception("relay to %s failed", conn.forwarder.endpoint)
        loop._drop(conn)
    finally:
        loop.sel.close()


_HUB: ForwarderHub | None = None
_HUB_LOCK = threading.Lock()


def hub() -> ForwarderHub:
    """The process's forwarder hub (started on first use)."""
    global _HUB
    if _HUB is None:
        with _HUB_LOCK:
            if _HUB is None:
                _HUB = ForwarderHub("hub")
                atexit.register(shutil.rmtree, _HUB.directory, True)
    return _HUB
