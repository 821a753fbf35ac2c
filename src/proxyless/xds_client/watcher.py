"""Resource watchers: the three ways a watched resource can change.

A watcher registered with :meth:`proxyless.xds_client.XdsClient.watch` is
called, one call at a time, on the Mesh's background thread:

``on_changed(value)``
    A new valid value. Use it from now on.
``on_resource_error(error)``
    The resource is gone or was never usable: it does not exist (deleted in a
    State-of-the-World response or its does-not-exist timer fired), or it was
    rejected and nothing was ever cached, or the control plane could not be
    reached before anything was cached. Stop using any previous value.
``on_ambient_error(error)``
    Something went wrong (stream failure, a NACKed update) but the last good
    value stays valid. Keep using it; log or surface the error.

This is the split gRPC's xDS clients use (gRFC A88, grpc-go's
``ResourceWatcher``): a connectivity problem never drops working config.
Callbacks must be quick and must not block; they run on the thread that
drives every xDS stream.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ResourceWatcher"]


class ResourceWatcher(Protocol):
    def on_changed(self, value: Any) -> None: ...

    def on_resource_error(self, error: Exception) -> None: ...

    def on_ambient_error(self, error: Exception) -> None: ...
