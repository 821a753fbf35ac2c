"""An in-process TCP fault proxy on loopback, for tests of the data path under network faults.

:class:`FaultProxy` listens on 127.0.0.1, and relays every connection it
accepts to a real backend (``upstream``, ``"host:port"``) unless told to
misbehave. What a connection does is decided when it is accepted: the
proxy's :attr:`FaultProxy.fault` (for all later connections), unless a
per-connection plan queued with :meth:`FaultProxy.plan` says otherwise for
the next ones. The faults (:class:`Fault`) are the ones a bad day brings:

``Fault.passthrough()``
    relay both ways, byte for byte.
``Fault.reset(after_bytes=N)``
    relay until ``N`` bytes of the backend's reply have reached the client,
    then abort the client's connection with a TCP RST (``SO_LINGER`` 0);
    ``N`` = 0 resets as soon as the backend sends anything (for HTTP/2 its
    SETTINGS frame, for HTTP/1.1 the first byte of the reply).
``Fault.hold()``
    accept and read whatever the client sends, never connect to the backend,
    never answer: an endpoint that is up but silent.
``Fault.half_close()``
    relay the client's first bytes to the backend, then shut down the write
    side toward the client (a FIN with no reply) and drop the backend
    connection; the client's socket is readable at end of file while the
    client may still write.
``Fault.slow(bytes_per_second)``
    relay the client's bytes at once and the backend's reply throttled to
    ``bytes_per_second``, in slices every 50 ms.

:meth:`FaultProxy.reset_connections` aborts every live connection at once
(with RST), whatever its fault: a mid-stream reset of the calls in flight.

:class:`BlackHole` is an address whose connects hang: a socket listening
with a backlog of 0 whose one accept-queue slot is taken by a connection it
made itself and never accepts. Linux then drops every later SYN (with
``net.ipv4.tcp_abort_on_overflow`` = 0, the default), so a client's connect
neither completes nor fails until its own timeout: a host that is gone.

Bounded by construction: every thread of a proxy stops within about 0.1 s
of :meth:`FaultProxy.close`, which joins them (2 s each at most); every
socket wait has a timeout; a held connection discards what it reads, and a
slow one buffers at most 64 KiB of the reply (it stops reading the backend
until the client has caught up). The proxy is also a context manager.
"""

from __future__ import annotations

import enum
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["BlackHole", "Fault", "FaultKind", "FaultProxy"]

#: How often blocked threads look at the stop flag, in seconds.
_TICK = 0.05
_CHUNK = 64 * 1024
_JOIN = 2.0


class FaultKind(enum.Enum):
    PASSTHROUGH = "passthrough"
    RESET = "reset"
    HOLD = "hold"
    HALF_CLOSE = "half_close"
    SLOW = "slow"


@dataclass(frozen=True, slots=True)
class Fault:
    """What one proxied connection does (see the module docstring)."""

    kind: FaultKind = FaultKind.PASSTHROUGH
    #: RESET: bytes of the reply relayed to the client before the RST
    after_bytes: int = 0
    #: SLOW: the reply's rate toward the client
    bytes_per_second: int = 0

    def __post_init__(self) -> None:
        if self.after_bytes < 0:
            raise ValueError(f"Fault.after_bytes must be >= 0, got {self.after_bytes}")
        if self.kind is FaultKind.SLOW and self.bytes_per_second <= 0:
            raise ValueError(f"Fault.slow needs bytes_per_second > 0, got {self.bytes_per_second}")

    @classmethod
    def passthrough(cls) -> Fault:
        return cls()

    @classmethod
    def reset(cls, after_bytes: int = 0) -> Fault:
        return cls(FaultKind.RESET, after_bytes=after_bytes)

    @classmethod
    def hold(cls) -> Fault:
        return cls(FaultKind.HOLD)

    @classmethod
    def half_close(cls) -> Fault:
        return cls(FaultKind.HALF_CLOSE)

    @classmethod
    def slow(cls, bytes_per_second: int) -> Fault:
        return cls(FaultKind.SLOW, bytes_per_second=bytes_per_second)


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream must be 'host:port', got {address!r}")
    return host.strip("[]"), int(port)


@dataclass(slots=True)
class _Conn:
    client: socket.socket
    fault: Fault
    upstream: socket.socket | None = None
    abort: bool = False
    done: bool = False
    #: bytes of the reply relayed to the client
    relayed: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` that injects :class:`Fault` s."""

    def __init__(
        self,
        upstream: str,
        *,
        fault: Fault | None = None,
        host: str = "127.0.0.1",
        connect_timeout: float = 2.0,
    ) -> None:
        self.upstream = upstream
        self._upstream = _split(upstream)
        #: the fault of every connection accepted from now on (unless planned)
        self.fault = fault or Fault.passthrough()
        self._connect_timeout = connect_timeout
        self._plan: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        #: connections accepted so far
        self.accepted = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self._listener.settimeout(_TICK)
        self.port: int = self._listener.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-accept-{self.port}", daemon=True
        )
        self._acceptor.start()

    # -- control ---------------------------------------------------------------------------
    def plan(self, *faults: Fault) -> None:
        """The next ``len(faults)`` connections get these faults, in order; later
        ones get :attr:`fault` again."""
        with self._lock:
            self._plan.extend(faults)

    @property
    def live(self) -> int:
        """Connections open now."""
        with self._lock:
            return sum(1 for c in self._conns if not c.done)

    def reset_connections(self) -> int:
        """Abort every live connection with a TCP RST; returns how many once
        every RST is sent (each connection's thread has ended; 2 s at most each)."""
        with self._lock:
            live = [c for c in self._conns if not c.done]
            for c in live:
                c.abort = True
        for c in live:
            if c.thread is not None:
                c.thread.join(_JOIN)
        return len(live)

    def close(self) -> None:
        """Stop accepting, close every connection and join every thread."""
        self._stop.set()
        self._acceptor.join(_JOIN)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            if c.thread is not None:
                c.thread.join(_JOIN)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.address} -> {self.upstream}, {self.fault.kind.value})"

    # -- threads -----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                fault = self._plan.popleft() if self._plan else self.fault
                conn = _Conn(client, fault)
                self._conns = [c for c in self._conns if not c.done]
                self._conns.append(conn)
                self.accepted += 1
            conn.thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"faultproxy-{self.port}", daemon=True
            )
            conn.thread.start()

    def _serve(self, conn: _Conn) -> None:
        try:
            if conn.fault.kind is FaultKind.HOLD:
                self._hold(conn)
            else:
                self._relay(conn)
        except OSError:
            pass
        finally:
            if conn.abort:
                _abort(conn.client)
            else:
                conn.client.close()
            if conn.upstream is not None:
                conn.upstream.close()
            conn.done = True

    def _stopping(self, conn: _Conn) -> bool:
        return self._stop.is_set() or conn.abort

    def _hold(self, conn: _Conn) -> None:
        conn.client.settimeout(_TICK)
        while not self._stopping(conn):
            try:
                if not conn.client.recv(_CHUNK):
                    return  # the client gave up
            except TimeoutError:
                continue

    def _relay(self, conn: _Conn) -> None:
        fault = conn.fault
        try:
            up = socket.create_connection(self._upstream, timeout=self._connect_timeout)
        except OSError:
            conn.abort = True  # the backend is down: the client sees a reset
            return
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.upstream = up
        conn.client.setblocking(False)
        up.setblocking(False)
        pending = bytearray()  # reply bytes not yet given to the client (SLOW)
        budget_at = time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(conn.client, selectors.EVENT_READ, "client")
            sel.register(up, selectors.EVENT_READ, "upstream")
            reading_up = True
            while not self._stopping(conn):
                for key, _ in sel.select(_TICK):
                    if self._stopping(conn):
                        return  # nothing more is relayed once a reset is asked for
                    if key.data == "client":
                        data = conn.client.recv(_CHUNK)
                        if not data:
                            return
                        if conn.upstream is None:
                            continue  # half-closed: what the client still sends is dropped
                        up.sendall(data)  # loopback: a short blocking send at most
                        if fault.kind is FaultKind.HALF_CLOSE:
                            conn.client.shutdown(socket.SHUT_WR)
                            sel.unregister(up)
                            reading_up = False
                            conn.upstream = None
                            up.close()
                        continue
                    data = up.recv(_CHUNK)
                    if not data:  # the backend closed: finish what is pending, then close
                        sel.unregister(up)
                        reading_up = False
                        if not pending:
                            return
                    elif fault.kind is FaultKind.SLOW:
                        if not pending:
                            budget_at = time.monotonic()
                        pending += data
                        if len(pending) >= _CHUNK:  # read no more until the client caught up
                            sel.unregister(up)
                            reading_up = False
                    elif not self._to_client(conn, data):
                        return
                if not pending:
                    continue
                now = time.monotonic()
                allowed = int((now - budget_at) * fault.bytes_per_second)
                if allowed <= 0:
                    continue
                budget_at = now
                piece = bytes(pending[:allowed])
                del pending[:allowed]
                conn.client.settimeout(_JOIN)
                conn.client.sendall(piece)
                conn.client.setblocking(False)
                if not pending:
                    if conn.upstream is None or up.fileno() < 0:
                        return
                    if not reading_up:
                        if not self._upstream_open(up):
                            return
                        sel.register(up, selectors.EVENT_READ, "upstream")
                        reading_up = True

    @staticmethod
    def _upstream_open(up: socket.socket) -> bool:
        """Whether the backend connection can still send (a SLOW relay paused reading it)."""
        try:
            return up.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True

    def _to_client(self, conn: _Conn, data: bytes) -> bool:
        """Relay reply bytes; False once a RESET fault fires."""
        fault = conn.fault
        if fault.kind is FaultKind.RESET:
            room = fault.after_bytes - conn.relayed
            if room <= 0:
                conn.abort = True
                return False
            data = data[:room]
        conn.client.settimeout(_JOIN)
        conn.client.sendall(data)
        conn.client.setblocking(False)
        conn.relayed += len(data)
        if fault.kind is FaultKind.RESET and conn.relayed >= fault.after_bytes:
            conn.abort = True
            return False
        return True


class BlackHole:
    """A loopback address whose TCP connects hang (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self.address = f"{host}:{self.port}"
        # Fill the accept queue (one slot at backlog 0; a second for kernels
        # that count differently); those connects complete, later ones hang.
        self._fillers: list[socket.socket] = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, self.port))
            self._fillers.append(s)
        time.sleep(0.05)  # let the handshakes of the fillers finish

    def close(self) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BlackHole({self.address})"
