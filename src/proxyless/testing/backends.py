"""Real gRPC test backends on 127.0.0.1.

:class:`EchoServer` is a real ``grpc.server`` serving the service
``proxyless.test.Echo`` with raw-bytes methods (no generated code needed):

- ``/proxyless.test.Echo/Echo``           unary-unary
- ``/proxyless.test.Echo/ServerStream``   unary-stream (request = count as ASCII)
- ``/proxyless.test.Echo/ClientStream``   stream-unary
- ``/proxyless.test.Echo/BidiStream``     stream-stream
- ``/proxyless.test.Echo/SetFailure``     unary: the request names a status code
  (``UNAVAILABLE``) every later call ends with, or is empty to stop failing;
  this call itself never fails (it is how another process breaks a backend)

Every reply is a JSON object naming the backend (``{"backend": name, ...}``)
so tests can count which endpoint served a call. Given a ``mesh``, the
backend is an xDS-enabled server instead (:func:`proxyless.grpc.server`,
gRFC A36): its port serves what the inbound Listener says (mTLS, plaintext,
RBAC), and every reply also carries ``"caller"``, the caller's verified
SPIFFE ID (:func:`proxyless.grpc.peer_identity`, None over plaintext). Failures are injected with
:meth:`EchoServer.fail_next` (the next N calls end with a status code) or
:attr:`EchoServer.delay` (seconds to sleep before answering). Calls seen are
counted in :attr:`EchoServer.calls`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from proxyless.grpc._serving import ServingStatusCallback
    from proxyless.mesh import Mesh

__all__ = ["ECHO_METHOD", "SET_FAILURE_METHOD", "EchoServer", "decode_reply", "main"]

SERVICE = "proxyless.test.Echo"
ECHO_METHOD = f"/{SERVICE}/Echo"
SET_FAILURE_METHOD = f"/{SERVICE}/SetFailure"


def decode_reply(data: bytes) -> dict[str, Any]:
    """Parse an :class:`EchoServer` reply."""
    result: dict[str, Any] = json.loads(data)
    return result


class EchoServer:
    """A gRPC echo backend on 127.0.0.1 that says who it is."""

    def __init__(
        self,
        name: str,
        *,
        port: int = 0,
        max_workers: int = 16,
        mesh: Mesh | None = None,
        host: str = "127.0.0.1",
        serving_status_callback: ServingStatusCallback | None = None,
        on_new_caller: Callable[[str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.calls = 0
        self.delay = 0.0
        self._fail_codes: list[grpc.StatusCode] = []
        self._always: grpc.StatusCode | None = None
        self._lock = threading.Lock()
        #: xDS mode: every caller identity served so far (None: plaintext)
        self.callers: list[str | None] = []
        self._on_new_caller = on_new_caller
        pool = self._pool = futures.ThreadPoolExecutor(max_workers=max_workers)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "BidiStream": grpc.stream_stream_rpc_method_handler(self._bidi_stream),
            "SetFailure": grpc.unary_unary_rpc_method_handler(self._set_failure),
        }
        generic = (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        self._xds = mesh is not None
        self._server: Any
        if mesh is not None:
            import proxyless.grpc

            self._server = proxyless.grpc.server(
                pool, mesh=mesh, serving_status_callback=serving_status_callback
            )
            self._server.add_generic_rpc_handlers(generic)
            self.port = self._server.add_port(f"{host}:{port}")
        else:
            self._server = grpc.server(pool)
            self._server.add_generic_rpc_handlers(generic)
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind {host}:{port} for backend {name}")
        self.address = f"{host}:{self.port}"
        self._in_flight = 0
        self.max_in_flight = 0

    # lifecycle -----------------------------------------------------------
    def start(self) -> EchoServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving, then let the handler threads go."""
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # failure injection -----------------------------------------------------
    def fail_next(self, count: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Make the next ``count`` calls end with ``code``."""
        with self._lock:
            self._fail_codes.extend([code] * count)

    def fail_always(self, code: grpc.StatusCode | None) -> None:
        """Make every call end with ``code`` (None to stop failing)."""
        with self._lock:
            self._fail_codes = []
            self._always = code

    # handlers ----------------------------------------------------------------
    def _begin(self, context: grpc.ServicerContext) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            code = self._fail_codes.pop(0) if self._fail_codes else self._always
        try:
            if self.delay:
                time.sleep(self.delay)
            if code is not None:
                context.abort(code, f"{self.name}: injected failure")
        except BaseException:
            self._end()
            raise
        metadata = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
        if not self._xds:
            return {"backend": self.name, "metadata": metadata}
        from proxyless.grpc import peer_identity

        caller = peer_identity(context)
        with self._lock:
            new = caller not in self.callers
            if new:
                self.callers.append(caller)
        if new and self._on_new_caller is not None:
            self._on_new_caller(caller)
        return {"backend": self.name, "metadata": metadata, "caller": caller}

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _set_failure(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        name = request.decode().strip().upper()
        if name:
            try:
                code = grpc.StatusCode[name]
            except KeyError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown status code {name!r}")
            self.fail_always(code)
        else:
            self.fail_always(None)
        return json.dumps({"backend": self.name, "failing": name or None}).encode()

    def _reply(self, info: dict[str, Any], **extra: Any) -> bytes:
        return json.dumps({**info, **extra}).encode()

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        info = self._begin(context)
        try:
            return self._reply(info, echo=request.decode(errors="replace"))
        finally:
            self._end()

    def _server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        info = self._begin(context)
        try:
            count = int(request or b"1")
            for i in range(count):
                yield self._reply(info, index=i)
        finally:
            self._end()

    def _client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        info = self._begin(context)
        try:
            received = [r.decode(errors="replace") for r in requests]
            return self._reply(info, received=received)
        finally:
            self._end()

    def _bidi_stream(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        info = self._begin(context)
        try:
            for r in requests:
                yield self._reply(info, echo=r.decode(errors="replace"))
        finally:
            self._end()

    def __repr__(self) -> str:
        return f"EchoServer({self.name!r}, {self.address}, calls={self.calls})"


def main(argv: list[str] | None = None) -> int:
    """Run one backend as a process: ``python -m proxyless.testing.backends NAME [PORT] [--xds]``.

    Prints ``READY <port>`` once the port is bound and the server started,
    and stops when standard input closes (so it never outlives the process
    that started it) or on SIGTERM. Each line read meanwhile is a command:
    ``fail CODE`` makes every later call end with status ``CODE``
    (``UNAVAILABLE``...), ``fail`` alone stops that; each is answered
    ``FAILING CODE`` or ``FAILING none`` (an unknown one ``ERROR ...``).

    With ``--xds`` the backend is an xDS-enabled server (gRFC A36) whose
    bootstrap comes from ``GRPC_XDS_BOOTSTRAP`` or ``GRPC_XDS_BOOTSTRAP_CONFIG``
    (it needs ``server_listener_resource_name_template``). It binds
    ``--host`` (default 127.0.0.1) and also prints ``SERVING`` or
    ``NOT_SERVING <reason>`` when the port's Listener comes or goes, and
    ``CALLER <SPIFFE ID>`` (``CALLER plaintext`` for a caller without one)
    the first time it serves each caller.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m proxyless.testing.backends")
    parser.add_argument("name")
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--xds", action="store_true", help="serve as an xDS-enabled server")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            print(line, flush=True)

    def on_serving(_address: str, serving: bool, error: Exception | None) -> None:
        say("SERVING" if serving else f"NOT_SERVING {error or 'no Listener'}")

    mesh: Mesh | None = None
    if args.xds:
        from proxyless.mesh import Mesh

        mesh = Mesh()
    server = EchoServer(
        args.name,
        port=args.port,
        host=args.host,
        mesh=mesh,
        serving_status_callback=on_serving if mesh is not None else None,
        on_new_caller=lambda caller: say(f"CALLER {caller or 'plaintext'}"),
    ).start()
    say(f"READY {server.port}")
    try:
        for line in sys.stdin:
            say(_command(server, line))
    except KeyboardInterrupt:
        pass
    server.stop(0)
    if mesh is not None:
        mesh.close()
    return 0


def _command(server: EchoServer, line: str) -> str:
    words = line.split()
    if not words or words[0] != "fail" or len(words) > 2:
        return f"ERROR unknown command {line.strip()!r} (fail [CODE])"
    if len(words) == 1:
        server.fail_always(None)
        return "FAILING none"
    try:
        code = grpc.StatusCode[words[1].upper()]
    except KeyError:
        return f"ERROR unknown status code {words[1]!r}"
    server.fail_always(code)
    return f"FAILING {code.name}"


if __name__ == "__main__":
    raise SystemExit(main())
