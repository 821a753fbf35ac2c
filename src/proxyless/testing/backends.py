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
so tests can count which endpoint served a call. Failures are injected with
:meth:`EchoServer.fail_next` (the next N calls end with a status code) or
:attr:`EchoServer.delay` (seconds to sleep before answering). Calls seen are
counted in :attr:`EchoServer.calls`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

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

    def __init__(self, name: str, *, port: int = 0, max_workers: int = 16) -> None:
        self.name = name
        self.calls = 0
        self.delay = 0.0
        self._fail_codes: list[grpc.StatusCode] = []
        self._always: grpc.StatusCode | None = None
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "BidiStream": grpc.stream_stream_rpc_method_handler(self._bidi_stream),
            "SetFailure": grpc.unary_unary_rpc_method_handler(self._set_failure),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind 127.0.0.1:{port} for backend {name}")
        self.address = f"127.0.0.1:{self.port}"
        self._in_flight = 0
        self.max_in_flight = 0

    # lifecycle -----------------------------------------------------------
    def start(self) -> EchoServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()

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
        return {"backend": self.name, "metadata": metadata}

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
    """Run one backend as a process: ``python -m proxyless.testing.backends NAME [PORT]``.

    Prints ``READY <port>`` once serving, and stops when standard input
    closes (so it never outlives the process that started it) or on SIGTERM.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m proxyless.testing.backends NAME [PORT]", file=sys.stderr)
        return 2
    server = EchoServer(args[0], port=int(args[1]) if len(args) > 1 else 0).start()
    print(f"READY {server.port}", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
