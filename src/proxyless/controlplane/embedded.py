"""The embedded control plane: Istio YAML in, xDS out, hot reloaded.

:class:`ControlPlane` owns an :class:`~proxyless.controlplane.server.AdsServer`
whose per-node snapshots come from the Istio translation
(:mod:`proxyless.controlplane.istio.translate`). A config is validated as a
whole before it is applied; a config with any error is refused and the last
good one keeps serving. When the config comes from a file the file is polled
(mtime and size, then a content hash) every ``poll_interval`` seconds; a
changed file is read once its size and mtime have stayed the same for
:data:`SETTLE_TIME` (a file being written is never read half written),
validated and pushed as a new version, and the ADS server pushes only to
streams whose resources changed.

Every node also gets its own SPIFFE SVID from a development CA
(:mod:`proxyless.controlplane.ca`, development-only trust), for the identity
its node metadata names (:mod:`proxyless.controlplane.identity`), served to
that node only as the SDS Secrets ``default`` and ``ROOTCA`` over ADS and
re-issued at 80% of its lifetime (:mod:`proxyless.controlplane.svid`).
With ``ca_dir`` the SVIDs of the mesh's workload identities are also
written as files for ``file_watcher`` clients
(:mod:`proxyless.controlplane.cert_files`).

Bootstraps for clients follow gRFC A27 (``xds_servers`` with
``channel_creds`` insecure and ``server_features: ["xds_v3"]``, ``node``);
:meth:`ControlPlane.envoy_bootstrap` writes Envoy's v3 bootstrap with ADS.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from proxyless.clock import Clock, SystemClock
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.cert_files import CertificateFiles, file_watcher_provider
from proxyless.controlplane.identity import (
    NodeIdentity,
    node_identity,
    workload_identities,
    workloads_by_ip,
)
from proxyless.controlplane.istio.load import LoadResult, MeshConfigError, load_text
from proxyless.controlplane.istio.model import Issue, MeshConfig
from proxyless.controlplane.istio.translate import (
    LISTENER_ADDRESS_KEY,
    LISTENER_PORTS_KEY,
    NodeProfile,
    Translator,
    node_profile,
)
from proxyless.controlplane.model import SECRET_TYPE, NodeInfo, Snapshot
from proxyless.controlplane.server import AdsServer
from proxyless.controlplane.svid import DEFAULT_TTL, SvidStore

__all__ = ["ControlPlane"]

_log = logging.getLogger(__name__)

#: How long a changed config file must stay unchanged before it is read.
SETTLE_TIME = 0.1


def _looks_like_yaml(text: str) -> bool:
    return "\n" in text or "kind:" in text or text.strip() == ""


class ControlPlane:
    """An ADS server serving an Istio YAML mesh config.

    ``config`` is a path (``str`` without newlines or ``os.PathLike``), YAML
    text, or None for an empty mesh. A path is watched for changes once
    started. Raises :class:`MeshConfigError` if the initial config is invalid.

    ``trust_domain`` (Istio's ``meshConfig.trustDomain``) names the SPIFFE
    IDs; ``certificate_ttl`` is the SVIDs' lifetime in seconds; ``clock``
    decides when they are renewed. ``ca_dir`` and ``identities``: see
    :mod:`proxyless.controlplane.cert_files`.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        poll_interval: float = 0.2,
        stderr: TextIO | None = None,
        report_warnings: bool = False,
        max_records: int | None = None,
        trust_domain: str = "cluster.local",
        certificate_ttl: float = DEFAULT_TTL,
        clock: Clock | None = None,
        ca_dir: str | os.PathLike[str] | None = None,
        identities: tuple[NodeIdentity, ...] = (),
        renew_check_interval: float = 1.0,
    ) -> None:
        self.path: Path | None = None
        text = ""
        label = "<config>"
        if isinstance(config, os.PathLike) or (
            isinstance(config, str) and not _looks_like_yaml(config)
        ):
            self.path = Path(config)
            label = str(self.path)
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise MeshConfigError([_read_issue(label, exc)]) from None
        elif isinstance(config, str):
            text = config
        self.poll_interval = poll_interval
        self._stderr = stderr
        self._report_warnings = report_warnings
        self._lock = threading.RLock()
        self._cache: dict[NodeProfile, Snapshot] = {}
        self.version = 0
        self.last_error: MeshConfigError | None = None
        self.reload_errors: list[str] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        result = load_text(text, label)
        if not result.ok:
            raise MeshConfigError(result.issues)
        self.trust_domain = trust_domain
        self.clock: Clock = clock or SystemClock()
        self.ca = DevCA(trust_domain)
        self.svids = SvidStore(self.ca, ttl=certificate_ttl, clock=self.clock)
        self._extra_identities = tuple(identities)
        self.certificate_files = (
            CertificateFiles(
                self.svids, ca_dir, workload_identities(result.mesh, self._extra_identities)
            )
            if ca_dir is not None
            else None
        )
        self.renew_check_interval = renew_check_interval
        self._renewer: threading.Thread | None = None
        self._identity_index: tuple[Translator, Mapping[str, NodeIdentity]] | None = None
        self._translator = Translator(result.mesh, trust_domain=trust_domain)
        self._applied_hash = hashlib.sha256(text.encode()).hexdigest()
        self._seen_hash = self._applied_hash
        self._stat = self._file_stat()
        self.version = 1
        self._report(result, applied=True)
        self.server = AdsServer(
            address, port, snapshot_fn=self.snapshot_for, max_records=max_records
        )

    # lifecycle -----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.server.address

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return self.server.target

    @property
    def mesh(self) -> MeshConfig:
        return self._translator.mesh

    def start(self) -> ControlPlane:
        if self.certificate_files is not None:
            self.certificate_files.sync()
        self.server.start()
        self._stop.clear()
        if self.renew_check_interval > 0:
            self._renewer = threading.Thread(
                target=self._renew_loop, name="proxyless-control-plane-certificates", daemon=True
            )
            self._renewer.start()
        if self.path is not None and self.poll_interval > 0:
            self._watcher = threading.Thread(
                target=self._watch, name="proxyless-control-plane-watch", daemon=True
            )
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._watcher, self._renewer):
            if thread is not None:
                thread.join(timeout=5)
        self._watcher = self._renewer = None
        self.server.stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # config --------------------------------------------------------------------------
    def update(self, yaml_text: str, *, file: str | None = None) -> LoadResult:
        """Validate and apply ``yaml_text``; raises :class:`MeshConfigError`, keeping the old config."""
        label = file or (str(self.path) if self.path else "<config>")
        result = load_text(yaml_text, label)
        if not result.ok:
            raise MeshConfigError(result.issues)
        self._apply(result.mesh)
        digest = hashlib.sha256(yaml_text.encode()).hexdigest()
        with self._lock:
            self._applied_hash = digest
        return result

    def reload(self) -> bool:
        """Re-read the watched file now; True if a new config was applied."""
        if self.path is None:
            return False
        with self._lock:
            self._stat = self._file_stat()
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._refuse(MeshConfigError([_read_issue(str(self.path), exc)]))
                return False
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest == self._seen_hash:
                return False
            self._seen_hash = digest
            result = load_text(text, str(self.path))
            if not result.ok:
                self._refuse(MeshConfigError(result.issues))
                return False
            self._applied_hash = digest
            self.last_error = None
        self._apply(result.mesh)
        self._report(result, applied=True)
        return True

    def _apply(self, mesh: MeshConfig) -> None:
        translator = Translator(mesh, trust_domain=self.trust_domain)
        with self._lock:
            self._translator = translator
            self._cache = {}
            self.version += 1
        _log.info("mesh config version %d applied", self.version)
        if self.certificate_files is not None:
            self.certificate_files.set_identities(workload_identities(mesh, self._extra_identities))
            self.certificate_files.sync()
        self.server.refresh()

    def _refuse(self, error: MeshConfigError) -> None:
        self.last_error = error
        where = str(self.path) if self.path else "config"
        message = (
            f"proxyless control-plane: refusing {where} "
            f"({len(error.errors)} error{'s' * (len(error.errors) != 1)}); "
            f"still serving version {self.version}\n"
            + "".join(f"  error: {issue}\n" for issue in error.errors)
        )
        self.reload_errors.append(message)
        stream = self._stderr or sys.stderr
        stream.write(message)
        stream.flush()

    def _report(self, result: LoadResult, *, applied: bool) -> None:
        if not self._report_warnings or not applied:
            return
        stream = self._stderr or sys.stderr
        for issue in result.warnings:
            stream.write(f"  warning: {issue}\n")
        stream.flush()

    def _file_stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                stat = self._file_stat()
                if stat == self._stat:
                    continue
                # Editors and write_text truncate, then write: read the file
                # only once it has stopped changing (istiod debounces file
                # changes the same way), never half written.
                while True:
                    if self._stop.wait(SETTLE_TIME):
                        return
                    again = self._file_stat()
                    if again == stat:
                        break
                    stat = again
                self.reload()
            except Exception:
                _log.exception("reloading %s failed", self.path)

    def snapshot_for(self, node: NodeInfo) -> Snapshot:
        """What ``node`` is served: its profile's translation plus its own Secrets."""
        profile = node_profile(node)
        with self._lock:
            cached = self._cache.get(profile)
            translator = self._translator
        if cached is None:
            cached = translator.snapshot(profile)
            with self._lock:
                if self._translator is translator:
                    self._cache[profile] = cached
        # Secrets are per node, never cached by profile: each node its own key.
        identity = node_identity(node, translator.mesh, by_ip=self._by_ip(translator))
        secrets = self.svids.secrets(node.id, identity.spiffe_id(self.trust_domain))
        return Snapshot({**cached.resources, SECRET_TYPE: secrets})

    # certificates --------------------------------------------------------------------
    def _by_ip(self, translator: Translator) -> Mapping[str, NodeIdentity]:
        """The mesh's workload identities by address, computed once per config."""
        with self._lock:
            cached = self._identity_index
            if cached is not None and cached[0] is translator:
                return cached[1]
        index = workloads_by_ip(translator.mesh)
        with self._lock:
            self._identity_index = (translator, index)
        return index

    def identity_of(self, node: NodeInfo) -> NodeIdentity:
        """The identity ``node`` is issued (see :mod:`proxyless.controlplane.identity`)."""
        return node_identity(node, self.mesh)

    def renew_certificates(self) -> int:
        """Re-issue every SVID past 80% of its lifetime (by :attr:`clock`), push the
        new Secrets and rewrite the files. Returns how many were re-issued. The
        renewal thread calls it every ``renew_check_interval`` seconds; tests
        with a fake clock call it."""
        renewed = self.svids.renew_due()
        if not renewed:
            return 0
        _log.info("renewed %d workload certificate(s)", len(renewed))
        if self.certificate_files is not None:
            self.certificate_files.sync()
        self.server.refresh()
        return len(renewed)

    def forget_disconnected(self) -> None:
        """Drop the SVIDs of nodes with no open stream (they get new ones if they return)."""
        keep = set(self.server.node_ids())
        if self.certificate_files is not None:
            keep.update(self.certificate_files.keys())
        self.svids.retain(keep)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_check_interval):
            try:
                self.forget_disconnected()
                self.renew_certificates()
            except Exception:
                _log.exception("renewing workload certificates failed")

    # bootstraps ----------------------------------------------------------------------
    def bootstrap(
        self,
        node_id: str = "proxyless-client",
        *,
        metadata: Mapping[str, Any] | None = None,
        namespace: str = "default",
        cluster: str = "",
        locality: Mapping[str, str] | None = None,
        server_features: tuple[str, ...] = ("xds_v3",),
        certificates: NodeIdentity | None = None,
    ) -> dict[str, Any]:
        """An xDS bootstrap (gRFC A27) for a proxyless client of this control plane.

        ``certificates``: add the ``certificate_providers`` entry ``default``
        (``file_watcher``, gRFC A29) reading that identity's files in
        ``ca_dir`` (which must be set), for clients that take certificates
        from files instead of SDS."""
        meta: dict[str, Any] = {"GENERATOR": "grpc", "NAMESPACE": namespace}
        meta.update(metadata or {})
        node: dict[str, Any] = {"id": node_id, "metadata": meta}
        if cluster:
            node["cluster"] = cluster
        if locality:
            node["locality"] = dict(locality)
        out: dict[str, Any] = {
            "xds_servers": [
                {
                    "server_uri": self.target,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": list(server_features),
                }
            ],
            "node": node,
        }
        if certificates is not None:
            if self.certificate_files is None:
                raise ValueError("certificates= needs a control plane started with ca_dir")
            out["certificate_providers"] = {
                "default": file_watcher_provider(self.certificate_files.directory, certificates)
            }
        return out

    def envoy_bootstrap(
        self,
        node_id: str = "envoy",
        *,
        listener_ports: Mapping[str, int],
        admin_port: int = 0,
        listener_address: str = "127.0.0.1",
        namespace: str = "default",
        delta: bool = False,
        cluster: str = "proxyless-envoy",
    ) -> dict[str, Any]:
        """An Envoy v3 bootstrap with ADS on this control plane.

        ``listener_ports`` maps ``host:port`` of a service to the local port
        Envoy listens on for it (node metadata ``PROXYLESS_LISTENER_PORTS``).
        """
        ads_source = {"ads": {}, "resource_api_version": "V3"}
        host, _, port = self.target.rpartition(":")
        return {
            "node": {
                "id": node_id,
                "cluster": cluster,
                "metadata": {
                    LISTENER_PORTS_KEY: dict(listener_ports),
                    LISTENER_ADDRESS_KEY: listener_address,
                    "NAMESPACE": namespace,
                },
            },
            "admin": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "DELTA_GRPC" if delta else "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "proxyless_xds"}}],
                    "set_node_on_first_message_only": True,
                },
                "lds_config": ads_source,
                "cds_config": ads_source,
            },
            "static_resources": {
                "clusters": [
                    {
                        "name": "proxyless_xds",
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "typed_extension_protocol_options": {
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                                "explicit_http_config": {"http2_protocol_options": {}},
                            }
                        },
                        "load_assignment": {
                            "cluster_name": "proxyless_xds",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": host.strip("[]"),
                                                        "port_value": int(port),
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ]
            },
        }

    def __repr__(self) -> str:
        source = str(self.path) if self.path else "<text>"
        return f"ControlPlane({source}, {self.target}, version={self.version})"


def _read_issue(label: str, exc: BaseException) -> Issue:
    return Issue("error", label, 0, "", "", "", f"cannot read: {exc}")
