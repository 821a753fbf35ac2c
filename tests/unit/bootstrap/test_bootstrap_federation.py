"""gRFC A47: authorities, listener resource name templates, server selection, stream keys."""

from __future__ import annotations

from typing import Any

import pytest

from proxyless.bootstrap import ChannelCreds, XdsServer, load_bootstrap
from proxyless.errors import BootstrapError

TOP = {"server_uri": "top.example.com:443", "channel_creds": [{"type": "insecure"}]}
OTHER = {"server_uri": "other.example.com:443", "channel_creds": [{"type": "insecure"}]}
LDS = "envoy.config.listener.v3.Listener"


def bootstrap(**fields: Any) -> Any:
    return load_bootstrap({"xds_servers": [TOP], **fields})


FEDERATED = {
    "client_default_listener_resource_name_template": f"xdstp://xds.example.com/{LDS}/%s",
    "authorities": {
        "xds.example.com": {},
        "xds.other.com": {
            "client_listener_resource_name_template": (
                f"xdstp://xds.other.com/{LDS}/grpc/client/%s?project_id=1234"
            ),
            "xds_servers": [OTHER],
        },
        "": {"client_listener_resource_name_template": f"xdstp:///{LDS}/%s"},
    },
}


@pytest.mark.parametrize(
    "fields, authority, name, expected",
    [
        pytest.param({}, None, "reviews:9080", "reviews:9080", id="old-style-default"),
        pytest.param({}, None, "a b%/c?", "a b%/c?", id="old-style-not-encoded"),
        pytest.param({}, "", "reviews", "reviews", id="empty-authority-is-no-authority"),
        pytest.param(
            {"client_default_listener_resource_name_template": "lds/%s/%s"},
            None,
            "x y",
            "lds/x y/x y",
            id="old-style-every-placeholder",
        ),
        pytest.param(
            {"client_default_listener_resource_name_template": "fixed"},
            None,
            "x",
            "fixed",
            id="template-without-placeholder",
        ),
        pytest.param(
            FEDERATED,
            None,
            "server.example.com",
            f"xdstp://xds.example.com/{LDS}/server.example.com",
            id="default-xdstp-template",
        ),
        pytest.param(
            FEDERATED,
            None,
            "a b/c",
            f"xdstp://xds.example.com/{LDS}/a%20b/c",
            id="default-xdstp-template-encodes",
        ),
        pytest.param(
            FEDERATED,
            "xds.example.com",
            "svc:8080",
            f"xdstp://xds.example.com/{LDS}/svc:8080",
            id="authority-default-template",
        ),
        pytest.param(
            FEDERATED,
            "xds.other.com",
            "svc",
            f"xdstp://xds.other.com/{LDS}/grpc/client/svc?project_id=1234",
            id="authority-custom-template",
        ),
        pytest.param(
            FEDERATED,
            "xds.example.com",
            "100%?#[] ",
            f"xdstp://xds.example.com/{LDS}/100%25%3F%23%5B%5D%20",
            id="encodes-reserved",
        ),
        pytest.param(
            FEDERATED,
            "xds.example.com",
            "a/b:c@d!$&'()*+,;=-._~",
            f"xdstp://xds.example.com/{LDS}/a/b:c@d!$&'()*+,;=-._~",
            id="keeps-path-characters",
        ),
        pytest.param(
            FEDERATED,
            "xds.example.com",
            "café",
            f"xdstp://xds.example.com/{LDS}/caf%C3%A9",
            id="encodes-utf8",
        ),
    ],
)
def test_listener_resource_name(
    fields: dict[str, Any], authority: str | None, name: str, expected: str
) -> None:
    assert bootstrap(**fields).listener_resource_name(authority, name) == expected


def test_unknown_authority_names_it_and_the_ones_on_offer() -> None:
    b = bootstrap(**FEDERATED)
    with pytest.raises(BootstrapError) as info:
        b.listener_resource_name("xds.unknown.com", "svc")
    message = str(info.value)
    assert "'xds.unknown.com'" in message
    assert "'xds.example.com', 'xds.other.com'" in message
    assert "<dict>" in message
    with pytest.raises(BootstrapError, match="on offer: none"):
        bootstrap().listener_resource_name("xds.unknown.com", "svc")


@pytest.mark.parametrize(
    "authority, expected_uri",
    [
        pytest.param(None, "top.example.com:443", id="old-style"),
        pytest.param("xds.example.com", "top.example.com:443", id="authority-without-servers"),
        pytest.param("xds.other.com", "other.example.com:443", id="authority-with-servers"),
        pytest.param("", "top.example.com:443", id="empty-authority-key"),
    ],
)
def test_servers_for_authority(authority: str | None, expected_uri: str) -> None:
    (server,) = bootstrap(**FEDERATED).servers_for_authority(authority)
    assert server.server_uri == expected_uri


def test_servers_for_unknown_authority() -> None:
    with pytest.raises(BootstrapError, match="'nope' is not in the bootstrap"):
        bootstrap(**FEDERATED).servers_for_authority("nope")


def test_authority_default_template_and_empty_template() -> None:
    b = bootstrap(
        authorities={"a.com": {}, "b.com": {"client_listener_resource_name_template": ""}}
    )
    for name in ("a.com", "b.com"):
        assert b.authorities[name].client_listener_resource_name_template == (
            f"xdstp://{name}/{LDS}/%s"
        )
        assert b.authorities[name].xds_servers == ()


def creds(type_: str, **config: str) -> ChannelCreds:
    return ChannelCreds(type_, config)


@pytest.mark.parametrize(
    "a, b, same",
    [
        pytest.param(
            XdsServer("x:1", creds("insecure"), frozenset({"xds_v3"})),
            XdsServer("x:1", creds("insecure")),
            True,
            id="features-do-not-matter",
        ),
        pytest.param(
            XdsServer("x:1", creds("tls", ca_certificate_file="ca", refresh_interval="60s")),
            XdsServer("x:1", creds("tls", refresh_interval="60s", ca_certificate_file="ca")),
            True,
            id="config-order-does-not-matter",
        ),
        pytest.param(
            XdsServer("x:1", creds("tls", ca_certificate_file="ca")),
            XdsServer("x:1", creds("tls", ca_certificate_file="other")),
            False,
            id="config-differs",
        ),
        pytest.param(
            XdsServer("x:1", creds("insecure")),
            XdsServer("x:1", creds("google_default")),
            False,
            id="creds-type-differs",
        ),
        pytest.param(
            XdsServer("x:1", creds("insecure")),
            XdsServer("dns:///x:1", creds("insecure")),
            False,
            id="uri-kept-as-written",
        ),
    ],
)
def test_server_key(a: XdsServer, b: XdsServer, same: bool) -> None:
    assert (a.key == b.key) is same
    hash(a.key)
    hash(a)


def test_same_server_in_two_authorities_shares_a_key() -> None:
    b = bootstrap(authorities={"a.com": {"xds_servers": [TOP]}, "b.com": {"xds_servers": [TOP]}})
    (a,) = b.servers_for_authority("a.com")
    (c,) = b.servers_for_authority("b.com")
    assert a.key == c.key == b.xds_servers[0].key
    assert len({a, c, b.xds_servers[0]}) == 1
