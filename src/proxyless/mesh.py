"""The Mesh: one per bootstrap, owner of the background thread.

A :class:`Mesh` reads a bootstrap, starts one daemon thread running an
asyncio loop, and on it the :class:`~proxyless.xds_client.XdsClient` (one ADS
stream per xDS server), the timers, and the per-target config watchers.
Request paths never run on this thread: they read immutable snapshots the
thread publishes (``docs/architecture.md``, "Threading model").

:meth:`Mesh.default` is the process-wide Mesh built from the environment
(``GRPC_XDS_BOOTSTRAP`` / ``GRPC_XDS_BOOTSTRAP_CONFIG``). Every channel and
transport created without an explicit ``mesh=`` shares it, and so shares its
ADS stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from proxyless.bootstrap import Bootstrap, load_bootstrap
from proxyless.clock import Clock, SystemClock
from proxyless.config import ConfigWatcher
from proxyless.lb.priority import PriorityMode
from proxyless.resources.types import ALL_TYPES
from proxyless.runtime.cluster import ClusterRegistry
from proxyless.runtime.load_report import LoadReporter
from proxyless.runtime.target import TargetRuntime
from proxyless.security.credentials import SecretSources
from proxyless.security.providers import CertificateProviders
from proxyless.security.sds import SdsSecrets
from proxyless.target import parse_target
from proxyless.xds_client import DOES_NOT_EXIST_TIMEOUT, XdsClient
from proxyless.xds_client.protocol import node_proto

__all__ = ["Mesh"]

log = logging.getLogger("proxyless")

_default_lock = threading.Lock()
_default: Mesh | None = None


class Mesh:
    """Owns the background thread and the xDS client for one bootstrap."""

    def __init__(
        self,
        bootstrap: Bootstrap | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        does_not_exist_timeout: float = DOES_NOT_EXIST_TIMEOUT,
        priority_mode: PriorityMode = "envoy",
    ) -> None:
        self.bootstrap = (
            bootstrap if isinstance(bootstrap, Bootstrap) else load_bootstrap(bootstrap)
        )
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="proxyless-mesh", daemon=True)
        self._thread.start()
        self.xds_client = XdsClient(
            self.bootstrap,
            self.loop,
            resource_types=ALL_TYPES,
            clock=self.clock,
            rng=self.rng,
            does_not_exist_timeout=does_not_exist_timeout,
        )
        self._closed = False
        self._configs: dict[str, ConfigWatcher] = {}
        self._configs_lock = threading.Lock()
        #: per-cluster runtime (load balancer, breakers, outlier detection)
        #: where TLS clusters' certificates come from (file, provider, SDS handlers)
        self.secrets = SecretSources()
        #: the bootstrap's certificate-provider instances (file_watcher), shared by clusters
        self.certificate_providers = CertificateProviders(
            self.bootstrap.certificate_providers,
            clock=self.clock,
            schedule=self.call_soon,
            now=self.secrets.now,
        )
        self.secrets.provider_identity = self.certificate_providers.watch_identity
        self.secrets.provider_trust = self.certificate_providers.watch_trust
        #: SDS secrets, on the ADS stream or from separate SDS servers
        self.sds = SdsSecrets(
            self.xds_client,
            self.bootstrap,
            self.loop,
            clock=self.clock,
            rng=self.rng,
            now=self.secrets.now,
            does_not_exist_timeout=does_not_exist_timeout,
        )
        self.secrets.sds_identity = self.sds.watch_identity
        self.secrets.sds_trust = self.sds.watch_trust
        self.clusters = ClusterRegistry(
            self.rng,
            mode=priority_mode,
            clock=self.clock,
            schedule=self.call_soon,
            sources=self.secrets,
        )
        self._targets: dict[tuple[str, bool], TargetRuntime] = {}
        #: LRS load reporting, started when a cluster asks for it
        self.load_reporter: LoadReporter | None = None
        self.clusters.on_load_reporting = self._start_load_reporting
        log.info(
            "xDS bootstrap from %s: node id %r, servers %s",
            self.bootstrap.source,
            self.bootstrap.node.id,
            ", ".join(s.server_uri for s in self.bootstrap.xds_servers),
        )

    def _start_load_reporting(self) -> None:
        reporter = self.load_reporter
        if reporter is None:
            with self._configs_lock:
                if self._closed:
                    return
                if self.load_reporter is None:
                    self.load_reporter = LoadReporter(
                        self.bootstrap.xds_servers[0],
                        node_proto(self.bootstrap),
                        self.clusters.reporting,
                    )
                reporter = self.load_reporter
        reporter.ensure_started()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the Mesh thread (now, when already on it)."""
        self.xds_client._call_on_loop(fn)

    def config(self, listener_name: str, host: str | None = None) -> ConfigWatcher:
        """The shared config watcher of a listener (one per name per Mesh),
        made to watch the clusters of the virtual host ``host`` selects (a
        gRPC channel's authority), or with None of every virtual host (an
        HTTP client's; see :mod:`proxyless.config.watcher`)."""
        with self._configs_lock:
            watcher = self._configs.get(listener_name)
            if watcher is None:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                watcher = ConfigWatcher(self.xds_client, listener_name, host=host)
                watcher.add_listener(self.clusters.apply)
                self._configs[listener_name] = watcher
                return watcher
        watcher.want(host)
        return watcher

    def watching(self, listener_name: str) -> bool:
        """Whether this Mesh already follows ``listener_name``."""
        return listener_name in self._configs

    def target(self, target: str, *, every_host: bool = True) -> TargetRuntime:
        """The shared routing state of ``target`` (``xds:///name``):
        ``every_host`` for requests that may carry any authority (HTTP), else
        for requests that all carry the target's own (a gRPC channel's),
        which need the clusters of one virtual host only (gRFC A74)."""
        key = (target, every_host)
        runtime = self._targets.get(key)
        if runtime is None:
            parsed = parse_target(target)
            with self._configs_lock:
                runtime = self._targets.get(key)
            if runtime is None:
                runtime = TargetRuntime(self, parsed, every_host=every_host)
                with self._configs_lock:
                    runtime = self._targets.setdefault(key, runtime)
        return runtime

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Stopped by close(): give back the loop's selector and self-pipe.
            self.loop.close()

    @classmethod
    def default(cls) -> Mesh:
        """The process-wide Mesh, built from the environment on first use."""
        global _default
        with _default_lock:
            if _default is None or _default._closed:
                _default = cls()
            return _default

    def close(self) -> None:
        """Stop the xDS client and the background thread."""
        global _default
        if self._closed:
            return
        self._closed = True
        with self._configs_lock:
            for watcher in self._configs.values():
                watcher.close()
            self._configs.clear()
            self._targets.clear()
        if self.load_reporter is not None:
            self.load_reporter.close()
        self.clusters.close()
        self.sds.close()
        self.xds_client.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        with _default_lock:
            if _default is self:
                _default = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"Mesh({self.bootstrap.source}, node={self.bootstrap.node.id!r}, {state})"
