"""Request bodies kept for retries, response bodies that give back what a request holds.

A retry resends the request body only when it can be replayed (Envoy's
router buffers the body up to the connection's buffer limit, 1 MiB by
default, and gives up retrying past it): a body given as bytes up to
``retry_buffer_limit``, or a streamed body that was not read at all or was
read completely within that limit (:class:`ReplayBody`).

A response body handed to the caller enforces the request's deadline (the
route ``timeout`` bounds the body too, as in Envoy) between chunks, and once
closed gives back what the request holds: its connection-pool slot, its
circuit-breaker slot (:class:`Finisher`).

The sans-I/O halves live here; the iterating halves are written once for
asyncio in :mod:`proxyless.httpx._async_transport` and generated for
threads (see ``tools/unasync.py``).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Final

import httpx

from proxyless.httpx._errors import timeout_error
from proxyless.httpx._pool import EndpointPools, PoolEntry

__all__ = [
    "DRAIN_LIMIT",
    "Finisher",
    "ReplayBody",
    "ResponseBody",
    "TimeoutSource",
    "body_for",
]

#: Response bodies read (to keep the connection) before a retry, at most.
DRAIN_LIMIT: Final = 64 * 1024


class ReplayBody:
    """A streamed request body kept (up to ``limit`` bytes) while it is sent,
    so a failed attempt can be retried with it. Subclasses iterate it."""

    def __init__(self, source: Any, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._state = "fresh"  # fresh | reading | done | overflow

    @property
    def replayable(self) -> bool:
        return self._state in ("fresh", "done")

    def _start(self) -> bool:
        """Before iterating: True to replay the kept chunks, False to read the source."""
        if self._state == "done":
            return True
        if self._state != "fresh":
            raise httpx.StreamConsumed()
        self._state = "reading"
        return False

    def _keep(self, chunk: bytes) -> None:
        if self._state == "reading":
            self._size += len(chunk)
            if self._size > self._limit:
                self._state = "overflow"
                self._chunks = []
            else:
                self._chunks.append(chunk)

    def _end(self) -> None:
        if self._state == "reading":
            self._state = "done"


def body_for(
    request: httpx.Request, limit: int, replay: Callable[[Any, int], ReplayBody]
) -> tuple[Any, bool | ReplayBody]:
    """(stream to send, replayable) — ``replayable`` may be a ReplayBody whose
    state is known only after the attempt; ``replay`` makes one."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        content = getattr(request, "_content", None)
        size = len(content) if content is not None else 0
        return stream, size <= limit
    body = replay(stream, limit)
    return body, body


class Finisher:
    """Releases what a request holds (pool slot, then breaker and fault slot
    through ``end``) once."""

    __slots__ = ("_end", "_entry", "_pools")

    def __init__(
        self, pools: EndpointPools, entry: PoolEntry | None, end: Callable[[], None]
    ) -> None:
        self._pools = pools
        self._entry = entry
        self._end: Callable[[], None] | None = end

    def __call__(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._pools.release_entry(entry)
        end, self._end = self._end, None
        if end is not None:
            end()


class TimeoutSource(typing.Protocol):
    @property
    def why_timeout(self) -> str: ...


class ResponseBody:
    """A response body that enforces the request's deadline between chunks
    and calls ``done`` once when closed, giving back what the request holds.
    Subclasses iterate and close it."""

    __slots__ = ("_deadline", "_done", "_inner", "_request", "_source")

    def __init__(
        self,
        inner: Any,
        done: Callable[[], None],
        deadline: float | None,
        request: httpx.Request,
        source: TimeoutSource,
    ) -> None:
        self._inner = inner
        self._done = done
        self._deadline = deadline
        self._request = request
        self._source = source

    def _expired(self) -> httpx.TimeoutException:
        return timeout_error(self._request, f"{self._source.why_timeout} expired", None)
