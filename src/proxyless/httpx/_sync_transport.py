# Generated from src/proxyless/httpx/_async_transport.py by tools/unasync.py: do not edit.
# Edit the source, then run `python tools/unasync.py`;
# `python tools/unasync.py --check` fails while this file is out of date.
"""``proxyless.httpx.Transport``: the I/O of httpx on the mesh request path.

Used as ``httpx.Client(transport=proxyless.httpx.Transport())``
(or in ``mounts``), the transport sends each request the way an Envoy
sidecar would with the same xDS config. Everything but sending, sleeping
and reading is the shared :class:`~proxyless.httpx._core.Core` (routing,
the fast path, attempt bookkeeping, outcome classification; see
``docs/architecture.md``, "The request path", and ``docs/httpx.md``); this
module holds the request loop: the fast path's first attempt, then the
fault filter's delay, mirrors, attempts and the backoff between them
(Envoy's router, "Retry semantics").

Retries resend the body only when it can be replayed: a body given as
bytes (``content=``, ``data=``, ``json=``) up to ``retry_buffer_limit``
bytes, or a streamed body that was not read at all (a connect failure) or
was read completely within that limit. Like Envoy, the method alone does
not stop a retry; ``retriable_request_headers`` (e.g. a ``:method``
matcher) restricts retries to the requests it matches. Failures become
httpx exceptions (:mod:`proxyless.httpx._errors`).

The code is written once, for asyncio, in ``_async_transport.py``;
``_sync_transport.py`` is generated from it by ``tools/unasync.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from proxyless.httpx import _sync_tls
from proxyless.httpx._bodies import DRAIN_LIMIT, ReplayBody, ResponseBody
from proxyless.httpx._core import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRY_BUFFER_LIMIT,
    Core,
    log,
    make_core,
)
from proxyless.httpx._hosts import Fallback, decide, refused
from proxyless.httpx._lane import FirstTry
from proxyless.httpx._mirror import Mirrors, mirror_request, mirror_targets
from proxyless.httpx._outcome import fault_delay, fault_response, oversized_headers
from proxyless.httpx._pool import PoolEntry
from proxyless.httpx._telemetry import RawHeaders, begin, end, passthrough
from proxyless.httpx._tls import pending_credentials, wait_credentials
from proxyless.httpx._upstream import Routed, Upstream
from proxyless.mesh import Mesh
from proxyless.observability.telemetry import CallTelemetry
from proxyless.resilience.fault import NO_FAULT

__all__ = ["SyncReplayStream", "SyncResponseStream", "Transport"]


class SyncReplayStream(ReplayBody, httpx.SyncByteStream):
    """A streamed request body, kept for retries while it is sent."""

    def __iter__(self) -> Iterator[bytes]:
        if self._start():
            for chunk in self._chunks:
                yield chunk
            return
        for chunk in self._source:
            self._keep(chunk)
            yield chunk
        self._end()


class SyncResponseStream(ResponseBody, httpx.SyncByteStream):
    """A response body bounded by the request's deadline, giving back what
    the request holds when closed."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        deadline = self._deadline
        for chunk in self._inner:
            if deadline is not None and time.monotonic() > deadline:
                self.close()
                raise self._expired()
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._done()


def _drain(response: httpx.Response) -> None:
    """Read a small failed response (keeps its connection), else just close it."""
    try:
        length = int(response.headers.get("content-length", "-1"))
        if 0 <= length <= DRAIN_LIMIT:
            response.read()
    except (httpx.HTTPError, ValueError):
        pass
    finally:
        response.close()


class Transport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` routing by xDS (see :mod:`proxyless.httpx`).

    ``mesh``: the :class:`~proxyless.mesh.Mesh` (default: the process-wide
    one from ``GRPC_XDS_BOOTSTRAP``). ``hosts`` / ``fallback``: which hosts
    go through the mesh and what happens to the others
    (:class:`~proxyless.httpx.MeshHosts`). ``verify``, ``cert``,
    ``trust_env``, ``limits`` configure every endpoint's httpx transport and
    the pass-through one (or give your own ``passthrough`` transport).
    ``retry_buffer_limit``: the largest request body kept for retries.
    ``max_retry_after``: the longest ``Retry-After`` waited for before a
    retry. Routing and picking never wait; only a host's first lookup waits
    for the control plane (off the event loop, in the default executor, for
    the async transport), and a request to a TLS cluster whose certificates
    have not arrived waits for them (without blocking the event loop).
    Endpoints of TLS clusters (``UpstreamTlsContext``) are reached with the
    cluster's credentials, not ``verify``/``cert`` (:mod:`proxyless.httpx._tls`).
    """

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        hosts: Iterable[str] | str | None = None,
        fallback: Fallback = "passthrough",
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        passthrough: httpx.BaseTransport | None = None,
        retry_buffer_limit: int = DEFAULT_RETRY_BUFFER_LIMIT,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self._passthrough: httpx.BaseTransport
        self._core, self._passthrough = make_core(
            _sync_tls.EndpointTransport,
            SyncReplayStream,
            SyncResponseStream,
            mesh,
            hosts,
            fallback,
            retry_buffer_limit,
            max_retry_after,
            {"verify": verify, "cert": cert, "trust_env": trust_env, "limits": limits},
            passthrough,
            _sync_tls.tls_transport,
        )
        self._mirrors = Mirrors()

    @property
    def mesh(self) -> Mesh:
        return self._core.mesh

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        if core.closed:
            raise RuntimeError("the proxyless httpx transport is closed")
        tel, extra = begin(request)
        if tel is None:
            return self._handle(core, request, None, extra)
        try:
            response = self._handle(core, request, tel, None)
        except BaseException as exc:
            end(tel, None, exc)
            raise
        end(tel, response, None)
        return response

    def _handle(
        self,
        core: Core,
        request: httpx.Request,
        tel: CallTelemetry | None,
        extra: RawHeaders | None,
    ) -> httpx.Response:
        too_big = oversized_headers(request)
        if too_big is not None:  # answered locally with 431, as Envoy does
            return too_big
        fast = core.fast(request, tel, extra)
        first: FirstTry | None = None
        if fast is not None:
            result: httpx.Response | httpx.TransportError
            try:
                result = fast.entry.transport.handle_request(fast.upstream)
            except httpx.TransportError as exc:
                result = exc
            except BaseException:
                core.sent(fast.attempt)
                core.fast_abort(fast)
                raise
            if fast.attempt.pending is not None:
                core.sent(fast.attempt)
            done = core.fast_done(fast, request, result)
            if isinstance(done, httpx.Response):
                return done
            routed, first = done
        else:
            scheme, host, port = core.check_url(request)
            decision = core.table.cached(host, port)
            if decision is None:
                decision = decide(core.table, request, host, port)
            if not decision.in_mesh:
                if core.refuse:
                    raise refused(request, decision)
                passthrough(tel, request, extra)
                return self._passthrough.handle_request(request)
            got = core.route_request(request, decision, scheme, host, port, tel, extra)
            if isinstance(got, httpx.Response):
                return got
            routed = got
        try:
            return self._send(core, routed, first)
        except BaseException:
            routed.call.end()
            raise

    def _send(self, core: Core, r: Routed, first: FirstTry | None = None) -> httpx.Response:
        """The attempts of a routed request; ``first`` is an attempt the fast
        path already made."""
        call = r.call
        if first is None and call.fault is not NO_FAULT:
            pause, err = fault_delay(r)
            if pause:
                time.sleep(pause)
            if err is not None:
                raise err
            local = fault_response(r)
            if local is not None:
                call.end()
                return local
        if first is None and r.plan.mirrors:
            self._mirror(core, r)
        while True:
            if first is not None:
                attempt, entry, result = first
                first = None
            else:
                pending = pending_credentials(r)
                if pending is not None:  # a TLS cluster's certificates are on their way
                    wait_credentials(*pending)
                attempt, entry, upstream = core.start_attempt(r)
                try:
                    result = entry.transport.handle_request(upstream)
                except httpx.TransportError as exc:
                    result = exc
                except BaseException:
                    core.sent(attempt)
                    core.pools.release_entry(entry)
                    attempt.endpoint.active_requests -= 1
                    raise
                if attempt.pending is not None:
                    core.sent(attempt)
            delay, response = core.settle(r, attempt, entry, result)
            if delay is None:
                assert response is not None
                return response
            if response is not None:  # a failed response: read it to keep its connection
                _drain(response)
                core.pools.release_entry(entry)
            if delay > 0:
                time.sleep(delay)

    def _mirror(self, core: Core, r: Routed) -> None:
        mirrors = self._mirrors
        for endpoint, cluster in mirror_targets(core, r):
            if mirrors.full():
                return
            built = mirror_request(core, r, endpoint, cluster)
            if built is None:
                continue
            entry, upstream = built
            if not mirrors.start(self._send_mirror, entry, upstream):
                core.pools.release_entry(entry)

    def _send_mirror(self, entry: PoolEntry, upstream: Upstream) -> None:
        try:
            response = entry.transport.handle_request(upstream)
            try:
                response.read()
            finally:
                response.close()
        except Exception as exc:
            log.debug("mirror request to %s failed: %s", entry.address, exc)
        finally:
            self._core.pools.release_entry(entry)

    def close(self) -> None:
        """Close every endpoint connection and the pass-through transport."""
        if self._core.closed:
            return
        self._mirrors.cancel()
        for transport in self._core.close_pools():
            try:
                transport.close()
            except Exception:
                log.debug("closing an endpoint transport failed", exc_info=True)
        self._passthrough.close()

    def __repr__(self) -> str:
        hosts, endpoints = self._core.hosts, len(self._core.pools)
        return f"<proxyless.httpx.Transport {hosts!r} endpoints={endpoints}>"
