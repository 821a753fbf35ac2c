"""Workload certificates written as files, for ``file_watcher`` clients.

``proxyless control-plane --ca-dir DIR`` writes, for each workload identity
``<namespace>/<service account>``, the three files istio-agent writes for
proxyless gRPC (``OUTPUT_CERTS``) and a bootstrap ``file_watcher``
certificate provider reads (gRFC A29 "Certificate Provider Plugin
Framework", A65):

* ``DIR/<ns>/<sa>/cert-chain.pem`` — the SVID, then the CA certificate;
* ``DIR/<ns>/<sa>/key.pem`` — its private key, mode 0600;
* ``DIR/<ns>/<sa>/root-cert.pem`` — the trust bundle.

Each file is written to a temporary name in the same directory and renamed
into place, so a reader never sees half a file; the key is created 0600
before a byte is written. Files are rewritten when their SVID is renewed
(at 80% of its lifetime, :mod:`proxyless.controlplane.svid`). The bootstrap
entry that reads them::

    "certificate_providers": {
      "default": {
        "plugin_name": "file_watcher",
        "config": {
          "certificate_file": "DIR/<ns>/<sa>/cert-chain.pem",
          "private_key_file": "DIR/<ns>/<sa>/key.pem",
          "ca_certificate_file": "DIR/<ns>/<sa>/root-cert.pem",
          "refresh_interval": "60s"
        }
      }
    }

The CA's own key is never written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxyless.controlplane.identity import NodeIdentity
from proxyless.controlplane.svid import SvidStore

__all__ = [
    "CERT_CHAIN_FILE",
    "KEY_FILE",
    "ROOT_CERT_FILE",
    "CertificateFiles",
    "file_watcher_provider",
]

CERT_CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"
ROOT_CERT_FILE = "root-cert.pem"


def _write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def file_watcher_provider(
    directory: str | os.PathLike[str], identity: NodeIdentity, refresh_interval: str = "60s"
) -> dict[str, Any]:
    """The bootstrap ``certificate_providers`` entry reading ``identity``'s files."""
    base = Path(directory) / identity.namespace / identity.service_account
    return {
        "plugin_name": "file_watcher",
        "config": {
            "certificate_file": str(base / CERT_CHAIN_FILE),
            "private_key_file": str(base / KEY_FILE),
            "ca_certificate_file": str(base / ROOT_CERT_FILE),
            "refresh_interval": refresh_interval,
        },
    }


class CertificateFiles:
    """Keeps ``DIR/<ns>/<sa>/*.pem`` current for a set of identities."""

    def __init__(
        self,
        store: SvidStore,
        directory: str | os.PathLike[str],
        identities: Iterable[NodeIdentity],
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.identities = tuple(sorted(set(identities)))
        self._written: dict[NodeIdentity, int] = {}

    def key(self, identity: NodeIdentity) -> str:
        """The store key of an identity's file SVID (distinct from any node id)."""
        return f"file:{self.directory}/{identity}"

    def path(self, identity: NodeIdentity) -> Path:
        return self.directory / identity.namespace / identity.service_account

    def set_identities(self, identities: Iterable[NodeIdentity]) -> None:
        self.identities = tuple(sorted(set(identities)))

    def sync(self) -> list[NodeIdentity]:
        """Write the files of every identity whose SVID is new or renewed; those written."""
        written = []
        td = self.store.trust_domain
        for identity in self.identities:
            held = self.store.get(self.key(identity), identity.spiffe_id(td))
            if self._written.get(identity) == held.serial:
                continue
            base = self.path(identity)
            base.mkdir(parents=True, exist_ok=True)
            _write(base / KEY_FILE, held.certificate.key_pem, 0o600)
            _write(base / CERT_CHAIN_FILE, held.certificate.chain_pem, 0o644)
            _write(base / ROOT_CERT_FILE, self.store.ca.roots_pem, 0o644)
            self._written[identity] = held.serial
            written.append(identity)
        return written

    def keys(self) -> list[str]:
        return [self.key(i) for i in self.identities]

    def __repr__(self) -> str:
        return f"CertificateFiles({str(self.directory)!r}, {len(self.identities)} identities)"
