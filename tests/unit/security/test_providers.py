"""file_watcher certificate-provider instances: reading, refreshing on a fake
clock, keeping good material through bad rewrites, expiry warnings, errors."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from proxyless.bootstrap.model import CertificateProviderInstance as ProviderConfig
from proxyless.controlplane.ca import DevCA
from proxyless.errors import CertificateError
from proxyless.resources.model.security import (
    CertificateProviderInstance,
    CertificateValidationContext,
    UpstreamTlsContext,
)
from proxyless.security.credentials import ClusterCredentials, Material, SecretSources
from proxyless.security.material import Identity, TrustBundle
from proxyless.security.providers import (
    DEFAULT_REFRESH_INTERVAL,
    CertificateProviders,
    FileWatcherConfig,
    parse_duration,
    spiffe_bundle_map,
)
from proxyless.testing import FakeClock

WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA()


class Files:
    """The files of one file_watcher instance in a tmp dir."""

    def __init__(self, root: Path) -> None:
        self.cert = root / "cert.pem"
        self.key = root / "key.pem"
        self.ca = root / "ca.pem"

    def write(self, ca: DevCA, spiffe_id: str = WEB, **issue: Any) -> None:
        svid = ca.issue(spiffe_id, **issue)
        self.cert.write_bytes(svid.chain_pem)
        self.key.write_bytes(svid.key_pem)
        self.ca.write_bytes(ca.roots_pem)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "certificate_file": str(self.cert),
            "private_key_file": str(self.key),
            "ca_certificate_file": str(self.ca),
            "refresh_interval": "60s",
            **extra,
        }


@pytest.fixture
def files(tmp_path: Path, ca: DevCA) -> Files:
    f = Files(tmp_path)
    f.write(ca)
    return f


def providers(
    configs: Mapping[str, Mapping[str, Any]],
    clock: FakeClock,
    now: Callable[[], float] = time.time,
) -> CertificateProviders:
    return CertificateProviders(
        {n: ProviderConfig("file_watcher", c) for n, c in configs.items()},
        clock=clock,
        schedule=lambda fn: fn(),
        now=now,
    )


def collect() -> tuple[list[Material], Callable[[Material], None]]:
    got: list[Material] = []
    return got, got.append


REF = CertificateProviderInstance("default", "default")


def test_identity_and_trust_are_read_at_once(files: Files) -> None:
    clock = FakeClock()
    p = providers({"default": files.config()}, clock)
    ids, on_id = collect()
    trust, on_trust = collect()
    p.watch_identity(REF, on_id)
    p.watch_trust(CertificateProviderInstance("default", "ROOTCA"), on_trust)
    assert len(ids) == 1 and isinstance(ids[0], Identity) and ids[0].spiffe_id == WEB
    assert len(trust) == 1 and isinstance(trust[0], TrustBundle)
    assert str(files.cert) in ids[0].source


def test_refresh_picks_up_rewritten_files_and_unchanged_bytes_deliver_nothing(
    files: Files, ca: DevCA
) -> None:
    clock = FakeClock()
    p = providers({"default": files.config()}, clock)
    ids, on_id = collect()
    p.watch_identity(REF, on_id)
    clock.advance(60)
    clock.advance(60)
    assert len(ids) == 1, "unchanged bytes are not delivered again"
    files.write(ca)
    clock.advance(59)
    assert len(ids) == 1, "not before the refresh interval"
    clock.advance(1)
    old, new = ids
    assert isinstance(old, Identity) and isinstance(new, Identity)
    assert new.chain_pem != old.chain_pem


def test_a_broken_rewrite_keeps_the_old_material_and_is_logged_once(
    files: Files, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    p = providers({"default": files.config()}, clock)
    ids, on_id = collect()
    p.watch_identity(REF, on_id)
    files.key.write_bytes(b"not a key")
    with caplog.at_level(logging.WARNING, logger="proxyless.security"):
        clock.advance(60)
        clock.advance(60)
        clock.advance(60)
    assert len(ids) == 1, "the last good identity stays"
    warnings = [r for r in caplog.records if "keeping the last good identity" in r.getMessage()]
    assert len(warnings) == 1, "one log line per distinct error"
    assert "private key does not load" in warnings[0].getMessage()
    files.write(ca)
    clock.advance(60)
    assert len(ids) == 2 and isinstance(ids[1], Identity)


def test_a_missing_file_on_first_read_delivers_an_error_naming_it(tmp_path: Path) -> None:
    clock = FakeClock()
    missing = Files(tmp_path)
    p = providers({"default": missing.config()}, clock)
    ids, on_id = collect()
    p.watch_identity(REF, on_id)
    assert len(ids) == 1 and isinstance(ids[0], CertificateError)
    assert str(missing.cert) in str(ids[0]) and "cannot read" in str(ids[0])
    clock.advance(60)
    assert len(ids) == 1, "the same error is not delivered again"


@pytest.mark.parametrize(
    ("break_files", "expected"),
    [
        pytest.param(
            lambda f, ca: f.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n"),
            "private key does not load",
            id="bad-key-file",
        ),
        pytest.param(
            lambda f, ca: f.key.write_bytes(ca.issue(WEB).key_pem),
            "does not match the certificate",
            id="key-not-matching-cert",
        ),
        pytest.param(
            lambda f, ca: f.cert.write_bytes(b"garbage"),
            "not PEM certificates",
            id="bad-certificate",
        ),
        pytest.param(lambda f, ca: f.key.unlink(), "cannot read the private key", id="no-key"),
    ],
)
def test_bad_files_give_an_error_naming_the_file(
    files: Files, ca: DevCA, break_files: Callable[[Files, DevCA], None], expected: str
) -> None:
    break_files(files, ca)
    ids, on_id = collect()
    providers({"default": files.config()}, FakeClock()).watch_identity(REF, on_id)
    assert len(ids) == 1 and isinstance(ids[0], CertificateError)
    assert expected in str(ids[0])
    assert str(files.cert) in str(ids[0]) or str(files.key) in str(ids[0])


def test_an_identity_nearing_expiry_is_logged_once_per_certificate(
    files: Files, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    wall = [time.time()]
    p = providers({"default": files.config()}, clock, now=lambda: wall[0])
    ids, on_id = collect()
    with caplog.at_level(logging.WARNING, logger="proxyless.security"):
        p.watch_identity(REF, on_id)
        assert not [r for r in caplog.records if "expires in" in r.getMessage()]
        identity = ids[0]
        assert isinstance(identity, Identity)
        wall[0] = identity.not_after - 200  # under 5 minutes left
        clock.advance(60)
        clock.advance(60)
    expiring = [r for r in caplog.records if "expires in" in r.getMessage()]
    assert len(expiring) == 1 and WEB in expiring[0].getMessage()


def test_an_unknown_instance_names_it_and_lists_the_configured_ones(files: Files) -> None:
    p = providers({"default": files.config(), "other": files.config()}, FakeClock())
    ids, on_id = collect()
    p.watch_identity(CertificateProviderInstance("nope"), on_id)
    assert len(ids) == 1 and isinstance(ids[0], CertificateError)
    assert "'nope'" in str(ids[0]) and "'default', 'other'" in str(ids[0])


def test_another_plugin_is_refused(files: Files) -> None:
    p = CertificateProviders(
        {"default": ProviderConfig("meshca", {})},
        clock=FakeClock(),
        schedule=lambda fn: fn(),
    )
    ids, on_id = collect()
    p.watch_identity(REF, on_id)
    assert isinstance(ids[0], CertificateError) and "only file_watcher" in str(ids[0])


def test_clusters_naming_one_instance_share_one_read_per_refresh(files: Files) -> None:
    clock = FakeClock()
    p = providers({"default": files.config()}, clock)
    cancels = []
    for _ in range(5):
        cancels.append(p.watch_identity(REF, lambda m: None))
        cancels.append(p.watch_trust(REF, lambda m: None))
    watcher = p.instance("default")
    before = watcher.reads
    clock.advance(60)
    assert watcher.reads - before == 1
    assert clock.pending() == 1
    for cancel in cancels:
        cancel()
    assert clock.pending() == 0, "no timer once nothing watches"


def test_through_cluster_credentials_rotation_raises_the_version(files: Files, ca: DevCA) -> None:
    clock = FakeClock()
    p = providers({"default": files.config()}, clock)
    sources = SecretSources()
    sources.provider_identity = p.watch_identity
    sources.provider_trust = p.watch_trust
    context = UpstreamTlsContext(
        identity=CertificateProviderInstance("default", "default"),
        validation=CertificateValidationContext(
            ca_certificate_provider=CertificateProviderInstance("default", "ROOTCA")
        ),
    )
    creds = ClusterCredentials("c", context, sources)
    first = creds.current()
    assert first.identity is not None and first.identity.spiffe_id == WEB
    files.write(ca, "spiffe://cluster.local/ns/default/sa/web2")
    clock.advance(60)
    second = creds.current()
    assert second.version > first.version
    assert second.identity is not None
    assert second.identity.spiffe_id == "spiffe://cluster.local/ns/default/sa/web2"
    creds.close()


# -- config and the SPIFFE trust-bundle map ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("60s", 60.0, id="whole"),
        pytest.param("0.5s", 0.5, id="fraction"),
        pytest.param("600s", 600.0, id="default-value"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["60", "0s", "-1s", "1m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_refresh_interval_defaults_to_600s() -> None:
    assert FileWatcherConfig.from_json({}).refresh_interval == DEFAULT_REFRESH_INTERVAL == 600.0


def _jwk(ca: DevCA, use: str = "x509-svid") -> dict[str, Any]:
    der = ssl.PEM_cert_to_DER_cert(ca.roots_pem.decode())
    return {"use": use, "kty": "EC", "x5c": [base64.b64encode(der).decode()]}


def test_spiffe_trust_bundle_map_replaces_the_ca_file(files: Files, tmp_path: Path) -> None:
    other = DevCA("example.org")
    doc = {
        "trust_domains": {
            "cluster.local": {"keys": [_jwk(DevCA()), {"use": "jwt-svid", "kty": "EC"}]},
            "example.org": {"keys": [_jwk(other)]},
        }
    }
    bundle_map = tmp_path / "bundles.json"
    bundle_map.write_text(json.dumps(doc))
    p = providers(
        {"default": files.config(spiffe_trust_bundle_map_file=str(bundle_map))}, FakeClock()
    )
    got, on_trust = collect()
    p.watch_trust(REF, on_trust)
    assert isinstance(got[0], TrustBundle)
    assert sorted(got[0].spiffe_bundles) == ["cluster.local", "example.org"]
    assert got[0].roots_for("spiffe://example.org/sa/x") == other.roots_pem


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param("{", "not a JSON", id="not-json"),
        pytest.param('{"domains": {}}', "'trust_domains'", id="no-trust-domains"),
        pytest.param('{"trust_domains": {"td": {}}}', "'keys'", id="no-keys"),
        pytest.param(
            '{"trust_domains": {"td": {"keys": [{"use": "x509-svid", "x5c": []}]}}}',
            "exactly one certificate",
            id="empty-x5c",
        ),
        pytest.param(
            '{"trust_domains": {"td": {"keys": [{"use": "x509-svid", "x5c": ["%%"]}]}}}',
            "not base64",
            id="bad-base64",
        ),
        pytest.param(
            '{"trust_domains": {"td": {"keys": [{"use": "jwt-svid"}]}}}',
            "no x509-svid key",
            id="only-jwt-keys",
        ),
    ],
)
def test_bad_spiffe_trust_bundle_maps(doc: str, expected: str) -> None:
    with pytest.raises(CertificateError, match=expected):
        spiffe_bundle_map(doc.encode(), "bundles.json")
