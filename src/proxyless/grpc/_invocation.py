"""One gRPC call's arguments, its routing headers, and the replay buffer of a
client stream.

- :class:`Invocation` carries what the application passed (call shape,
  method, (de)serializers, request, metadata, credentials, wait-for-ready,
  compression) through routing and every attempt, and starts an attempt on
  an endpoint's channel.
- :func:`metadata_headers` turns call metadata into the headers routes
  match on (gRFC A28: lower-case names, ``-bin`` entries ignored, repeated
  values joined with ``,``).
- :class:`Replay` buffers a client-streaming request so that a failed
  attempt can be replayed, up to :data:`REPLAY_LIMIT` bytes (gRPC's per-call
  retry buffer, gRFC A6); past it the call is committed to its attempt. The
  same buffer serves sync attempts (:meth:`Replay.attempt`) and ``grpc.aio``
  attempts (:meth:`Replay.aattempt`, which also takes async iterators).

See docs/architecture.md for where this sits on the request path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxyless.grpc._pool import PooledChannel

__all__ = [
    "NO_REQUEST",
    "REPLAY_LIMIT",
    "SAME",
    "Invocation",
    "Replay",
    "metadata_headers",
]

_EMPTY: dict[str, str] = {}

#: "the call's own request" for :meth:`Invocation.start`
SAME: Any = object()
#: The request of a streaming call the caller feeds with ``write()`` (aio).
NO_REQUEST: Any = object()

#: Client-streaming requests are buffered for retries up to this many bytes
#: (gRPC's per-call retry buffer, gRFC A6); past it the call is committed.
REPLAY_LIMIT = 16 * 1024 * 1024


def metadata_headers(metadata: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    """Call metadata as routing headers: lower-case names, repeated values
    joined with ",", binary (``-bin``) entries left out (gRFC A28)."""
    if not metadata:
        return _EMPTY
    out: dict[str, str] = {}
    for key, value in metadata:
        if key.endswith("-bin") or not isinstance(value, str):
            continue
        k = key.lower()
        prev = out.get(k)
        out[k] = value if prev is None else f"{prev},{value}"
    return out


class Invocation:
    """One call's arguments as the application gave them: the call shape
    (``kind``, grpc's multicallable name), method, (de)serializers, request
    and the keyword arguments passed on to every attempt."""

    __slots__ = (
        "compression",
        "credentials",
        "deser",
        "extra",
        "kind",
        "metadata",
        "method",
        "request",
        "ser",
        "tel",
        "wait_for_ready",
    )

    def __init__(
        self,
        kind: str,
        method: str,
        ser: Any,
        deser: Any,
        request: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.kind = kind
        self.method = method
        self.ser = ser
        self.deser = deser
        self.request = request
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression
        #: metadata every attempt adds (request id, trace context: :mod:`._telemetry`)
        self.extra: tuple[tuple[str, str], ...] = ()
        #: the call's telemetry, whose headers change per attempt
        self.tel: Any = None

    def start(
        self,
        pooled: PooledChannel,
        timeout: float | None,
        *,
        request: Any = SAME,
        kind: str | None = None,
        attr: str | None = None,
    ) -> Any:
        """Make the call on an endpoint's channel: the multicallable for
        ``kind`` (default: the call's own), its ``attr`` (``future``,
        ``with_call``) if given, with ``request`` (default: the call's)."""
        mc = pooled.callable(kind or self.kind, self.method, self.ser, self.deser)
        fn = mc if attr is None else getattr(mc, attr)
        request = self.request if request is SAME else request
        metadata = self.metadata
        tel = self.tel
        extra = tel.headers if tel is not None else self.extra
        if extra:
            metadata = (*metadata, *extra) if metadata else extra
        kwargs = {
            "timeout": timeout,
            "metadata": metadata,
            "credentials": self.credentials,
            "wait_for_ready": self.wait_for_ready,
            "compression": self.compression,
        }
        return fn(**kwargs) if request is NO_REQUEST else fn(request, **kwargs)

    def __repr__(self) -> str:
        return f"<Invocation {self.kind} {self.method}>"


class Replay:
    """Buffers a request stream so a failed attempt can be replayed (see the
    module docstring). ``source`` is an iterator, or for ``grpc.aio`` calls
    an async iterator."""

    __slots__ = ("_ser", "_source", "buffer", "committed", "size")

    def __init__(self, source: Any, ser: Callable[[Any], bytes] | None) -> None:
        self._source: Any = source.__aiter__() if hasattr(source, "__aiter__") else iter(source)
        self._ser = ser
        self.buffer: list[Any] = []
        self.size = 0
        self.committed = False

    def keep(self, message: Any) -> None:
        """Remember a message sent, until the buffer overflows (then commit)."""
        if self.committed:
            return
        self.size += len(self._ser(message) if self._ser else message)
        if self.size > REPLAY_LIMIT:
            self.committed = True
            self.buffer = []
        else:
            self.buffer.append(message)

    def attempt(self) -> Iterator[Any]:
        """The request stream for one attempt: what was sent so far, then the rest."""
        yield from list(self.buffer)
        for message in self._source:
            self.keep(message)
            yield message

    async def aattempt(self) -> AsyncIterator[Any]:
        """:meth:`attempt` for ``grpc.aio``; the source may be an async iterator."""
        for message in list(self.buffer):
            yield message
        source = self._source
        if hasattr(source, "__anext__"):
            async for message in source:
                self.keep(message)
                yield message
        else:
            for message in source:
                self.keep(message)
                yield message
