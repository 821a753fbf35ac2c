"""The sync channel's multicallables: grpc's four call shapes, each a thin
layer over the channel's :class:`Dispatch` (``XdsChannel``; the signatures are
grpc's own, so generated stubs and interceptors work unchanged).

- :class:`UnaryUnary`: ``__call__``/``with_call`` block and retry;
  ``future()`` returns a retrying call object.
- :class:`StreamUnary`: ``__call__``/``with_call`` buffer the request stream
  for replay and retry; ``future()`` makes one attempt.
- :class:`UnaryStream`: retried until the first response message (commit).
- :class:`StreamStream`: one attempt, recorded and released when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import grpc

from proxyless.grpc._invocation import Invocation

__all__ = ["Dispatch", "StreamStream", "StreamUnary", "UnaryStream", "UnaryUnary"]


class Dispatch(Protocol):
    """What the multicallables ask of their channel (``XdsChannel``)."""

    def run_unary(self, inv: Invocation, timeout: float | None, streaming_request: bool) -> Any: ...

    def start_retrying(self, inv: Invocation, timeout: float | None, *, streaming: bool) -> Any: ...

    def start_single(self, inv: Invocation, timeout: float | None, attr: str | None) -> Any: ...


class _Method:
    """What the multicallables of one method share."""

    __slots__ = ("_ch", "_deser", "_method", "_ser")

    def __init__(self, ch: Dispatch, method: str, ser: Any, deser: Any) -> None:
        self._ch = ch
        self._method = method
        self._ser = ser
        self._deser = deser

    def _inv(self, kind: str, request: Any, kw: dict[str, Any]) -> Invocation:
        return Invocation(
            kind,
            self._method,
            self._ser,
            self._deser,
            request,
            kw["metadata"],
            kw["credentials"],
            kw["wait_for_ready"],
            kw["compression"],
        )

    def _unary(self, kind: str, request: Any, kw: dict[str, Any], streaming: bool = False) -> Any:
        """A blocking unary-response call (retried)."""
        inv = self._inv(kind, request, kw)
        return self._ch.run_unary(inv, kw["timeout"], streaming)

    def _retrying(self, kind: str, request: Any, kw: dict[str, Any], streaming: bool) -> Any:
        """A call object retried behind the scenes (unary future, server stream)."""
        return self._ch.start_retrying(
            self._inv(kind, request, kw), kw["timeout"], streaming=streaming
        )

    def _single(self, kind: str, request: Any, kw: dict[str, Any], attr: str | None) -> Any:
        """A call object making one attempt (bidi streams, client-stream futures)."""
        return self._ch.start_single(self._inv(kind, request, kw), kw["timeout"], attr)


def _kw(
    timeout: float | None,
    metadata: Any,
    credentials: Any,
    wait_for_ready: bool | None,
    compression: Any,
) -> dict[str, Any]:
    return {
        "timeout": timeout,
        "metadata": metadata,
        "credentials": credentials,
        "wait_for_ready": wait_for_ready,
        "compression": compression,
    }


class UnaryUnary(_Method, grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._unary("unary_unary", request, kw)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._unary("unary_unary_with_call", request, kw)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._retrying("unary_unary", request, kw, streaming=False)


class StreamUnary(_Method, grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._unary("stream_unary", request_iterator, kw, streaming=True)

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._unary("stream_unary_with_call", request_iterator, kw, streaming=True)

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._single("stream_unary", request_iterator, kw, attr="future")


class UnaryStream(_Method):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._retrying("unary_stream", request, kw, streaming=True)


class StreamStream(_Method):
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._single("stream_stream", request_iterator, kw, attr=None)
