"""gRPC errors raised by proxyless channels when a call fails before or
instead of reaching a backend.

They are ``grpc.RpcError`` (and ``grpc.Call``), so code written for plain
channels keeps working: ``code()`` is UNAVAILABLE unless a gRFC says
otherwise (never NOT_FOUND from the control plane: gRFC A54/A88), and
``details()`` says where it broke — the target, the route and the cluster.
The typed exception from :mod:`proxyless.errors` is ``.proxyless_error``
(and the ``__cause__``). ``grpc.aio`` channels raise the same failures as
``grpc.aio.AioRpcError`` (:func:`as_aio`), with ``.proxyless_error`` too.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from proxyless.errors import ProxylessError

__all__ = ["FailedCall", "XdsRpcError", "as_aio", "rpc_error", "status_error"]


class XdsRpcError(grpc.RpcError, grpc.Call):
    """A call that proxyless ended locally (see the module docstring)."""

    def __init__(self, code: grpc.StatusCode, details: str, error: ProxylessError | None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self.proxyless_error = error
        #: Envoy response flags (``UF``, ``UT,URX`` ...), "" for none
        self.flags: str = getattr(error, "flag", "") or ""

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> Any:
        flags = self.flags
        return (("x-proxyless-flag", flags),) if flags else ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False

    def __str__(self) -> str:
        return f"<XdsRpcError {self._code.name}: {self._details}>"

    __repr__ = __str__


class FailedCall(XdsRpcError, grpc.Future):  # type: ignore[type-arg]
    """A call that failed before it started, for the shapes grpc reports
    failures through the call object: ``future()`` results and response
    streams. It is done; ``result()`` and iteration raise it."""

    @classmethod
    def of(cls, err: grpc.RpcError) -> FailedCall:
        if isinstance(err, FailedCall):
            return err
        if isinstance(err, XdsRpcError):
            out = cls(err.code(), err.details(), err.proxyless_error)
            out.flags = err.flags
        else:
            out = cls(grpc.StatusCode.UNKNOWN, str(err), None)
        out.__cause__ = err.__cause__
        return out

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> XdsRpcError:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Any) -> None:
        fn(self)

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def __iter__(self) -> FailedCall:
        return self

    def __next__(self) -> Any:
        raise self

    def next(self) -> Any:
        raise self


def rpc_error(error: ProxylessError, target: str) -> XdsRpcError:
    """The gRPC error for a proxyless failure on ``target``."""
    code = grpc.StatusCode.UNAVAILABLE
    details = f"{target}: {error}"
    flag = getattr(error, "flag", "")
    if flag:
        details = f"{details} [{flag}]"
    err = XdsRpcError(code, details, error)
    err.__cause__ = error
    return err


def as_aio(err: grpc.RpcError) -> grpc.RpcError:
    """``err`` as ``grpc.aio`` code expects it: our own errors become
    ``grpc.aio.AioRpcError`` (same code and details, with ``.proxyless_error``
    and the cause kept); grpc's own pass through."""
    if not isinstance(err, XdsRpcError):
        return err
    out = status_error(err.code(), err.details())
    out.proxyless_error = err.proxyless_error  # type: ignore[attr-defined]
    out.flags = err.flags  # type: ignore[attr-defined]
    out.__cause__ = err.__cause__
    return out


def status_error(code: grpc.StatusCode, details: str | None) -> grpc.aio.AioRpcError:
    """A ``grpc.aio`` error with ``code`` and ``details`` and no metadata."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)
