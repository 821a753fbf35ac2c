"""The TCP fault proxy itself, against a real echo server on 127.0.0.1.

Each fault of :class:`proxyless.testing.faultproxy.Fault` as the client's
socket sees it, the per-connection plan, resetting live connections, the
black-holed connect, and that :meth:`FaultProxy.close` leaves no thread.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from proxyless.testing.faultproxy import BlackHole, Fault, FaultKind, FaultProxy

pytestmark = pytest.mark.leak_strict

REPLY_SIZE = 4_000


class _Echo(socketserver.BaseRequestHandler):
    """Answers every chunk with the chunk followed by REPLY_SIZE bytes of b"r"."""

    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        self.request.settimeout(5)
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data + b"r" * REPLY_SIZE)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0


@pytest.fixture
def backend() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(2)


@pytest.fixture
def proxy(backend: _Server) -> Iterator[FaultProxy]:
    host, port = backend.server_address[:2]
    with FaultProxy(f"{host}:{port}") as p:
        yield p


def _connect(proxy: FaultProxy, timeout: float = 3.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _read_all(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def test_passthrough_relays_both_ways(proxy: FaultProxy, backend: _Server) -> None:
    with _connect(proxy) as s:
        for word in (b"hello", b"again"):
            s.sendall(word)
            assert _read_all(s, len(word) + REPLY_SIZE) == word + b"r" * REPLY_SIZE
    assert proxy.accepted == 1
    assert backend.connections == 1


@pytest.mark.parametrize("after", [pytest.param(0, id="at-once"), pytest.param(100, id="100B")])
def test_reset_after_n_reply_bytes(proxy: FaultProxy, after: int) -> None:
    proxy.fault = Fault.reset(after_bytes=after)
    with _connect(proxy) as s:
        s.sendall(b"hi")
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break  # pragma: no cover - a FIN would be the bug this test catches
                got += chunk
        assert got == (b"hi" + b"r" * REPLY_SIZE)[:after]


def test_hold_accepts_and_never_answers(proxy: FaultProxy, backend: _Server) -> None:
    proxy.fault = Fault.hold()
    with _connect(proxy, timeout=0.3) as s:
        s.sendall(b"anyone there?" * 1000)
        with pytest.raises(TimeoutError):
            s.recv(10)
    assert proxy.accepted == 1
    assert backend.connections == 0  # the backend never saw it


def test_half_close_sends_fin_without_a_reply(proxy: FaultProxy) -> None:
    proxy.fault = Fault.half_close()
    with _connect(proxy) as s:
        s.sendall(b"request")
        assert s.recv(10) == b""  # end of file, no reply byte
        s.sendall(b"more")  # the client may still write


def test_slow_throttles_the_reply_and_keeps_it_intact(proxy: FaultProxy) -> None:
    proxy.fault = Fault.slow(bytes_per_second=20_000)
    with _connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"x")
        data = _read_all(s, 1 + REPLY_SIZE)
        elapsed = time.monotonic() - start
    assert data == b"x" + b"r" * REPLY_SIZE
    # 4 KB at 20 KB/s cannot arrive sooner than ~0.2 s (a lower bound only).
    assert elapsed >= 0.15


def test_plan_applies_to_the_next_connections_then_the_default(proxy: FaultProxy) -> None:
    proxy.plan(Fault.reset(), Fault.hold())
    with _connect(proxy) as s:
        s.sendall(b"a")
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    with _connect(proxy, timeout=0.2) as s:
        s.sendall(b"b")
        with pytest.raises(TimeoutError):
            s.recv(10)
    with _connect(proxy) as s:
        s.sendall(b"c")
        assert _read_all(s, 1 + REPLY_SIZE)[:1] == b"c"


def test_reset_connections_aborts_live_ones(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        s.sendall(b"a")
        _read_all(s, 1 + REPLY_SIZE)
        deadline = time.monotonic() + 2
        while proxy.live < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.reset_connections() == 1
        with pytest.raises(ConnectionResetError):
            s.recv(10)


def test_upstream_down_resets_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with FaultProxy(f"127.0.0.1:{port}") as p, _connect(p) as s:
        with pytest.raises(ConnectionResetError):
            s.sendall(b"x")
            s.recv(10)


def test_black_hole_connect_hangs_until_the_clients_timeout() -> None:
    with BlackHole() as hole:
        s = socket.socket()
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.connect(("127.0.0.1", hole.port))
        s.close()


def test_close_stops_every_thread(backend: _Server) -> None:
    before = {t.ident for t in threading.enumerate()}
    host, port = backend.server_address[:2]
    proxy = FaultProxy(f"{host}:{port}")
    socks = [_connect(proxy) for _ in range(3)]
    deadline = time.monotonic() + 5
    while proxy.accepted < 3 and time.monotonic() < deadline:
        time.sleep(0.005)  # the plan is for the fourth connection
    proxy.plan(Fault.hold())
    socks.append(_connect(proxy))
    for s in socks[:3]:
        s.sendall(b"x")
        _read_all(s, 1 + REPLY_SIZE)
    proxy.close()
    mine = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("faultproxy")
    ]
    assert mine == []
    for s in socks:
        s.close()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: Fault.reset(after_bytes=-1), "after_bytes", id="negative-after"),
        pytest.param(lambda: Fault.slow(0), "bytes_per_second", id="zero-rate"),
        pytest.param(lambda: FaultProxy("nowhere"), "host:port", id="bad-upstream"),
    ],
)
def test_bad_arguments_name_the_field(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_fault_kinds_and_repr(proxy: FaultProxy) -> None:
    assert Fault.passthrough().kind is FaultKind.PASSTHROUGH
    assert Fault.slow(10) == Fault(FaultKind.SLOW, bytes_per_second=10)
    assert "passthrough" in repr(proxy)
