"""Certificate-provider instances from the bootstrap: the ``file_watcher`` plugin.

Implements gRFC A29's ``certificate_providers`` (with A65's ``file_watcher``
config) and gRFC A87's ``spiffe_trust_bundle_map_file``. A cluster's TLS
context names an instance (``CertificateProviderPluginInstance``); every
cluster naming the same instance shares one :class:`FileWatcher`, so the
files are read once per refresh whatever the number of clusters.

The rules:

- ``certificate_file`` + ``private_key_file`` make the :class:`Identity`;
  ``ca_certificate_file`` the :class:`TrustBundle`. When
  ``spiffe_trust_bundle_map_file`` is set it replaces ``ca_certificate_file``
  (which is then ignored, A87): a JSON object
  ``{"trust_domains": {"<td>": {"keys": [{"use": "x509-svid", "x5c": ["<base64 DER>"]}]}}}``;
  keys of another ``use`` are skipped, an ``x509-svid`` key must carry
  exactly one certificate, and any invalid entry makes the whole file invalid.
- The files are read again every ``refresh_interval`` (a duration string
  such as ``"60s"``; 600 s when unset, as gRPC's ``file_watcher``) on the
  Mesh's clock. New material is delivered only when the bytes changed.
- The first read failing delivers a
  :class:`~proxyless.errors.CertificateError` naming the file; a later
  failure (a missing file, a half-written rewrite, a key that does not match
  its certificate) keeps the last good material and is logged once per
  distinct error.
- An identity with less than 10% of its lifetime or under 5 minutes left is
  logged at WARNING, once per certificate; an expired one at ERROR.
- An instance missing from the bootstrap, or of another plugin, delivers a
  :class:`~proxyless.errors.CertificateError` naming it and listing the
  configured ones.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxyless.bootstrap.model import CertificateProviderInstance as ProviderConfig
from proxyless.clock import Clock, TimerHandle
from proxyless.errors import CertificateError, SecurityError
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    SdsSecretConfig,
    TlsIdentity,
)
from proxyless.security.credentials import Material
from proxyless.security.material import Identity, TrustBundle, load_identity, load_trust

__all__ = [
    "DEFAULT_REFRESH_INTERVAL",
    "CertificateProviders",
    "ExpiryLog",
    "FileWatcher",
    "FileWatcherConfig",
    "parse_duration",
    "spiffe_bundle_map",
]

log = logging.getLogger("proxyless.security")

#: gRPC's ``file_watcher`` default refresh interval, in seconds.
DEFAULT_REFRESH_INTERVAL = 600.0
#: An identity is "nearing expiry" with less than this share of its lifetime left…
EXPIRY_FRACTION = 0.1
#: …or less than this many seconds.
EXPIRY_SECONDS = 300.0

Deliver = Callable[[Material], None]
Unsubscribe = Callable[[], None]


def parse_duration(text: str) -> float:
    """A protobuf JSON duration (``"60s"``, ``"0.5s"``) in seconds."""
    if not text.endswith("s"):
        raise ValueError(f"expected a duration in seconds such as '600s', found {text!r}")
    seconds = float(text[:-1])
    if seconds <= 0:
        raise ValueError(f"a refresh interval must be greater than 0s, found {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class FileWatcherConfig:
    """The ``config`` of a ``file_watcher`` instance (validated by the bootstrap loader)."""

    certificate_file: str | None = None
    private_key_file: str | None = None
    ca_certificate_file: str | None = None
    spiffe_trust_bundle_map_file: str | None = None
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL

    @classmethod
    def from_json(cls, config: Mapping[str, Any]) -> FileWatcherConfig:
        interval = config.get("refresh_interval")
        return cls(
            certificate_file=config.get("certificate_file"),
            private_key_file=config.get("private_key_file"),
            ca_certificate_file=config.get("ca_certificate_file"),
            spiffe_trust_bundle_map_file=config.get("spiffe_trust_bundle_map_file"),
            refresh_interval=(
                parse_duration(interval) if interval is not None else DEFAULT_REFRESH_INTERVAL
            ),
        )


def spiffe_bundle_map(data: bytes, source: str) -> dict[str, bytes]:
    """Trust domain -> PEM roots from a SPIFFE trust-bundle map (gRFC A87)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CertificateError(f"{source}: not a JSON SPIFFE trust bundle map ({exc})") from None
    domains = doc.get("trust_domains") if isinstance(doc, dict) else None
    if not isinstance(domains, dict):
        raise CertificateError(f"{source}: expected an object with a 'trust_domains' object")
    bundles: dict[str, bytes] = {}
    for domain, bundle in domains.items():
        where = f"{source}: trust domain {domain!r}"
        keys = bundle.get("keys") if isinstance(bundle, dict) else None
        if not isinstance(keys, list):
            raise CertificateError(f"{where}: expected a 'keys' array")
        pems: list[str] = []
        for i, key in enumerate(keys):
            if not isinstance(key, dict):
                raise CertificateError(f"{where}: keys[{i}] is not an object")
            if key.get("use") != "x509-svid":
                continue  # JWT-SVID keys and others are not for TLS
            x5c = key.get("x5c")
            if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
                raise CertificateError(f"{where}: keys[{i}].x5c must hold exactly one certificate")
            try:
                der = base64.b64decode(x5c[0], validate=True)
            except ValueError:
                raise CertificateError(f"{where}: keys[{i}].x5c[0] is not base64") from None
            pems.append(ssl.DER_cert_to_PEM_cert(der))
        if not pems:
            raise CertificateError(f"{where}: no x509-svid key")
        bundles[domain] = "".join(pems).encode()
    return bundles


class ExpiryLog:
    """Logs an identity nearing or past expiry, once per certificate."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, float]] = set()

    def check(self, identity: Identity, now: float, where: str) -> None:
        left = identity.expires_in(now)
        lifetime = identity.not_after - identity.not_before
        if left > EXPIRY_SECONDS and left > EXPIRY_FRACTION * lifetime:
            return
        key = (identity.source, identity.not_after)
        if key in self._warned:
            return
        self._warned.add(key)
        who = identity.spiffe_id or "the certificate"
        if left <= 0:
            log.error("%s: %s has expired (%.0fs ago); renew it", where, who, -left)
        else:
            log.warning(
                "%s: %s expires in %.0fs (of a %.0fs lifetime); it should be renewed",
                where,
                who,
                left,
                lifetime,
            )


class FileWatcher:
    """One ``file_watcher`` instance: reads its files, refreshes them on a
    timer while anything watches, and delivers material to its watchers.

    ``schedule`` runs a function on the thread that owns ``clock``'s timers
    (the Mesh's loop); the timer is armed there. ``now`` (seconds since the
    epoch) is what certificate validity is checked against.
    """

    def __init__(
        self,
        name: str,
        config: FileWatcherConfig,
        *,
        clock: Clock,
        schedule: Callable[[Callable[[], None]], None],
        now: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._now = now or clock.time
        self._schedule = schedule
        self._lock = threading.Lock()
        #: serialises reads (the first watcher's thread and the timer's)
        self._io = threading.RLock()
        self._identity_watchers: list[Deliver] = []
        self._trust_watchers: list[Deliver] = []
        self._identity: Material | None = None
        self._trust: Material | None = None
        self._identity_bytes: tuple[bytes, bytes] | None = None
        self._trust_bytes: bytes | None = None
        self._logged: dict[str, str] = {}
        self._expiry = ExpiryLog()
        self._timer: TimerHandle | None = None
        self._armed = False
        #: how many times the files were read (one per refresh, for every watcher)
        self.reads = 0

    # -- watching ------------------------------------------------------------------------
    def watch_identity(self, deliver: Deliver) -> Unsubscribe:
        if self.config.certificate_file is None:
            deliver(
                CertificateError(
                    f"certificate-provider instance {self.name!r} has no certificate_file: "
                    "it provides no identity"
                )
            )
            return _nothing
        return self._watch(self._identity_watchers, deliver, identity=True)

    def watch_trust(self, deliver: Deliver) -> Unsubscribe:
        if (
            self.config.ca_certificate_file is None
            and self.config.spiffe_trust_bundle_map_file is None
        ):
            deliver(
                CertificateError(
                    f"certificate-provider instance {self.name!r} has no ca_certificate_file "
                    "or spiffe_trust_bundle_map_file: it provides no trust bundle"
                )
            )
            return _nothing
        return self._watch(self._trust_watchers, deliver, identity=False)

    def _watch(self, watchers: list[Deliver], deliver: Deliver, *, identity: bool) -> Unsubscribe:
        with self._lock:
            first = not self._identity_watchers and not self._trust_watchers
            watchers.append(deliver)
            current = self._identity if identity else self._trust
        if current is None:
            # Read now, on the caller's thread, so material is ready at once.
            if identity:
                self._refresh_identity()
            else:
                self._refresh_trust()
        else:
            deliver(current)
        if first:
            self._schedule(self._arm)

        def cancel() -> None:
            with self._lock:
                if deliver in watchers:
                    watchers.remove(deliver)
                idle = not self._identity_watchers and not self._trust_watchers
                timer, self._timer = (self._timer, None) if idle else (None, self._timer)
                if idle:
                    self._armed = False
            if timer is not None:
                timer.cancel()

        return cancel

    # -- refreshing ----------------------------------------------------------------------
    def _arm(self) -> None:
        with self._lock:
            if self._armed or not (self._identity_watchers or self._trust_watchers):
                return
            self._armed = True
            self._timer = self._clock.call_later(self.config.refresh_interval, self._tick)

    def _tick(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            self._timer = None
            identity, trust = bool(self._identity_watchers), bool(self._trust_watchers)
        self.refresh(identity=identity, trust=trust)
        self._arm()

    def refresh(self, *, identity: bool = True, trust: bool = True) -> None:
        """Read the files now (the timer calls this every refresh interval)."""
        self.reads += 1
        if identity and self.config.certificate_file is not None:
            self._refresh_identity()
        if trust and (
            self.config.ca_certificate_file is not None
            or self.config.spiffe_trust_bundle_map_file is not None
        ):
            self._refresh_trust()

    def _refresh_identity(self) -> None:
        with self._io:
            self._read_identity()

    def _refresh_trust(self) -> None:
        with self._io:
            self._read_trust()

    def _read_identity(self) -> None:
        cert_file, key_file = self.config.certificate_file, self.config.private_key_file
        assert cert_file is not None and key_file is not None
        now = self._now()
        try:
            data = (_read(cert_file, "certificate"), _read(key_file, "private key"))
            if data == self._identity_bytes:
                if isinstance(self._identity, Identity):
                    self._expiry.check(self._identity, now, self._where)
                return
            material: Identity = load_identity(
                *data, source=f"{cert_file} (key {key_file})", now=now
            )
        except SecurityError as exc:
            self._failed("identity", exc, identity=True)
            return
        self._identity_bytes = data
        self._logged.pop("identity", None)
        self._expiry.check(material, now, self._where)
        self._publish(material, identity=True)

    def _read_trust(self) -> None:
        map_file = self.config.spiffe_trust_bundle_map_file
        try:
            if map_file is not None:
                data = _read(map_file, "SPIFFE trust bundle map")
                if data == self._trust_bytes:
                    return
                bundles = spiffe_bundle_map(data, map_file)
                material = load_trust(b"", source=map_file, spiffe_bundles=bundles)
            else:
                ca_file = self.config.ca_certificate_file
                assert ca_file is not None
                data = _read(ca_file, "CA certificate")
                if data == self._trust_bytes:
                    return
                material = load_trust(data, source=ca_file)
        except SecurityError as exc:
            self._failed("trust", exc, identity=False)
            return
        self._trust_bytes = data
        self._logged.pop("trust", None)
        self._publish(material, identity=False)

    def _failed(self, what: str, exc: SecurityError, *, identity: bool) -> None:
        with self._lock:
            current = self._identity if identity else self._trust
        good = isinstance(current, (Identity, TrustBundle))
        if self._logged.get(what) != str(exc):
            self._logged[what] = str(exc)
            if good:
                log.warning("%s: %s; keeping the last good %s", self._where, exc, what)
            else:
                log.error("%s: %s", self._where, exc)
        if not good and (current is None or str(current) != str(exc)):
            self._publish(exc, identity=identity)

    def _publish(self, material: Material, *, identity: bool) -> None:
        with self._lock:
            if identity:
                self._identity = material
                watchers = list(self._identity_watchers)
            else:
                self._trust = material
                watchers = list(self._trust_watchers)
        for deliver in watchers:
            deliver(material)

    @property
    def refreshing(self) -> bool:
        """Whether the refresh timer is set (anything watches the instance)."""
        return self._armed

    @property
    def _where(self) -> str:
        return f"certificate-provider instance {self.name!r}"

    def __repr__(self) -> str:
        return f"FileWatcher({self.name!r}, every {self.config.refresh_interval:g}s)"


class CertificateProviders:
    """The bootstrap's certificate-provider instances, made on first use and
    shared by every cluster; registered on ``Mesh.secrets`` as
    ``provider_identity`` and ``provider_trust``."""

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        *,
        clock: Clock,
        schedule: Callable[[Callable[[], None]], None],
        now: Callable[[], float] | None = None,
    ) -> None:
        self._configs = configs
        self._clock = clock
        self._schedule = schedule
        self._now = now
        self._lock = threading.Lock()
        self._instances: dict[str, FileWatcher] = {}

    def instance(self, name: str) -> FileWatcher:
        """The provider of instance ``name``; raises CertificateError if there is none."""
        with self._lock:
            provider = self._instances.get(name)
            if provider is not None:
                return provider
            config = self._configs.get(name)
            if config is None:
                offered = ", ".join(repr(n) for n in sorted(self._configs)) or "none"
                raise CertificateError(
                    f"certificate-provider instance {name!r} is not in the bootstrap's "
                    f"certificate_providers (configured: {offered})"
                )
            if config.plugin_name != "file_watcher":
                raise CertificateError(
                    f"certificate-provider instance {name!r} uses plugin "
                    f"{config.plugin_name!r}; only file_watcher is supported"
                )
            try:
                parsed = FileWatcherConfig.from_json(config.config)
            except ValueError as exc:
                raise CertificateError(f"certificate-provider instance {name!r}: {exc}") from None
            provider = FileWatcher(
                name, parsed, clock=self._clock, schedule=self._schedule, now=self._now
            )
            self._instances[name] = provider
            return provider

    def watch_identity(self, ref: TlsIdentity, deliver: Deliver) -> Unsubscribe:
        """An :class:`~proxyless.security.credentials.IdentityHandler`."""
        assert isinstance(ref, CertificateProviderInstance)
        try:
            provider = self.instance(ref.instance_name)
        except CertificateError as exc:
            deliver(exc)
            return _nothing
        return provider.watch_identity(deliver)

    def watch_trust(
        self, ref: SdsSecretConfig | CertificateProviderInstance, deliver: Deliver
    ) -> Unsubscribe:
        """A :class:`~proxyless.security.credentials.TrustHandler`."""
        assert isinstance(ref, CertificateProviderInstance)
        try:
            provider = self.instance(ref.instance_name)
        except CertificateError as exc:
            deliver(exc)
            return _nothing
        return provider.watch_trust(deliver)

    def __repr__(self) -> str:
        return f"CertificateProviders({sorted(self._configs)})"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read the {what} file ({exc.strerror})") from None


def _nothing() -> None:
    return None
