"""Every invalid bootstrap raises BootstrapError naming the source and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxyless.bootstrap import load_bootstrap
from proxyless.errors import BootstrapError

_DROP = object()


def server(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "server_uri": "127.0.0.1:15010",
        "channel_creds": [{"type": "insecure"}],
    }
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not _DROP}


def doc(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"xds_servers": [server()]}
    document.update(fields)
    return {k: v for k, v in document.items() if v is not _DROP}


def tls(**config: Any) -> dict[str, Any]:
    return doc(
        xds_servers=[server(channel_creds=[{"type": "foo"}, {"type": "tls", "config": config}])]
    )


def provider(**entry: Any) -> dict[str, Any]:
    return doc(certificate_providers={"default": entry})


def authority(**entry: Any) -> dict[str, Any]:
    return doc(authorities={"a.com": entry})


TLS = "xds_servers[0].channel_creds[1].config"
FW = 'certificate_providers["default"]'
AUTH = 'authorities["a.com"]'
S0 = "xds_servers[0]"

CASES = [
    # The document itself.
    pytest.param("[1, 2]", "", "top level must be a JSON object, found array", id="top-array"),
    pytest.param('"x"', "", "top level must be a JSON object, found string", id="top-string"),
    pytest.param(" \n", "", "is empty; expected a JSON object", id="blank-text"),
    pytest.param('{"xds_servers": [}', "", "malformed JSON at line 1 column 18", id="malformed"),
    pytest.param(
        '{\n  "xds_servers": [\n    {"server_uri": "x"\n  ]\n}',
        "",
        "malformed JSON at line 4 column 3: Expecting ',' delimiter",
        id="malformed-multiline",
    ),
    pytest.param('{"a": NaN}', "", "NaN is not valid JSON", id="nan"),
    # xds_servers
    pytest.param(doc(xds_servers=_DROP), "xds_servers", "missing", id="servers-missing"),
    pytest.param(doc(xds_servers=None), "xds_servers", "missing", id="servers-null"),
    pytest.param(doc(xds_servers=[]), "xds_servers", "is empty", id="servers-empty"),
    pytest.param(
        doc(xds_servers={"server_uri": "x"}),
        "xds_servers",
        "expected an array, found object",
        id="servers-object",
    ),
    pytest.param(
        doc(xds_servers=["x:1"]), S0, "expected an object, found string 'x:1'", id="server-string"
    ),
    pytest.param(
        doc(xds_servers=[server(server_uri=_DROP)]),
        f"{S0}.server_uri",
        "missing; expected a string",
        id="uri-missing",
    ),
    pytest.param(
        doc(xds_servers=[server(server_uri=" ")]), f"{S0}.server_uri", "is empty", id="uri-empty"
    ),
    pytest.param(
        doc(xds_servers=[server(server_uri=15010)]),
        f"{S0}.server_uri",
        "expected a string, found number 15010",
        id="uri-number",
    ),
    pytest.param(
        doc(xds_servers=[server(), server(server_uri=None)]),
        "xds_servers[1].server_uri",
        "missing",
        id="second-server-uri-null",
    ),
    pytest.param(
        doc(xds_servers=[server(server_features="xds_v3")]),
        f"{S0}.server_features",
        "expected an array, found string 'xds_v3'",
        id="features-string",
    ),
    pytest.param(
        doc(xds_servers=[server(server_features=["xds_v3", 3])]),
        f"{S0}.server_features[1]",
        "expected a string, found number 3",
        id="feature-number",
    ),
    # channel_creds
    pytest.param(
        doc(xds_servers=[server(channel_creds=_DROP)]),
        f"{S0}.channel_creds",
        "missing; expected an array",
        id="creds-missing",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=[])]),
        f"{S0}.channel_creds",
        "is empty; expected at least one of: insecure, tls, google_default",
        id="creds-empty",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds={"type": "insecure"})]),
        f"{S0}.channel_creds",
        "expected an array, found object",
        id="creds-object",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=["insecure"])]),
        f"{S0}.channel_creds[0]",
        "expected an object, found string 'insecure'",
        id="creds-entry-string",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=[{"config": {}}])]),
        f"{S0}.channel_creds[0].type",
        "missing; expected a string",
        id="creds-type-missing",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=[{"type": True}])]),
        f"{S0}.channel_creds[0].type",
        "expected a string, found boolean true",
        id="creds-type-bool",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=[{"type": "foo"}, {"type": "bar"}])]),
        f"{S0}.channel_creds",
        "no supported channel credentials type: found 'foo', 'bar'; "
        "supported: insecure, tls, google_default",
        id="creds-none-supported",
    ),
    pytest.param(
        doc(xds_servers=[server(channel_creds=[{"type": "insecure", "config": []}])]),
        f"{S0}.channel_creds[0].config",
        "expected an object, found array",
        id="creds-config-array",
    ),
    # tls channel creds (gRFC A65)
    pytest.param(
        tls(ca_certificate_file=1),
        f"{TLS}.ca_certificate_file",
        "expected a string, found number 1",
        id="tls-ca-number",
    ),
    pytest.param(
        tls(ca_certificate_file=""), f"{TLS}.ca_certificate_file", "is empty", id="tls-ca-empty"
    ),
    pytest.param(
        tls(certificate_file="/c.pem"),
        f"{TLS}.private_key_file",
        "must be set together (only certificate_file is set)",
        id="tls-cert-without-key",
    ),
    pytest.param(
        tls(private_key_file="/k.pem"),
        f"{TLS}.certificate_file",
        "must be set together (only private_key_file is set)",
        id="tls-key-without-cert",
    ),
    pytest.param(
        tls(certificate_file=["/c.pem"], private_key_file="/k.pem"),
        f"{TLS}.certificate_file",
        "expected a string, found array",
        id="tls-cert-array",
    ),
    pytest.param(
        tls(refresh_interval="15m"),
        f"{TLS}.refresh_interval",
        "expected a duration in seconds such as \"600s\", found '15m'",
        id="tls-interval-minutes",
    ),
    pytest.param(
        tls(refresh_interval=900),
        f"{TLS}.refresh_interval",
        "expected a string, found number 900",
        id="tls-interval-number",
    ),
    pytest.param(
        tls(refresh_interval="0s"),
        f"{TLS}.refresh_interval",
        "greater than 0s",
        id="tls-interval-0",
    ),
    # node
    pytest.param(doc(node=[]), "node", "expected an object, found array", id="node-array"),
    pytest.param(doc(node={"id": 7}), "node.id", "expected a string, found number 7", id="node-id"),
    pytest.param(
        doc(node={"cluster": ["c"]}), "node.cluster", "expected a string, found array", id="cluster"
    ),
    pytest.param(
        doc(node={"locality": "us-east1"}),
        "node.locality",
        "expected an object, found string 'us-east1'",
        id="locality-string",
    ),
    pytest.param(
        doc(node={"locality": {"zone": 1}}),
        "node.locality.zone",
        "expected a string, found number 1",
        id="locality-zone",
    ),
    pytest.param(
        doc(node={"locality": {"sub_zone": False}}),
        "node.locality.sub_zone",
        "expected a string, found boolean false",
        id="locality-sub-zone",
    ),
    pytest.param(
        doc(node={"metadata": ["GENERATOR", "grpc"]}),
        "node.metadata",
        "expected an object, found array",
        id="metadata-array",
    ),
    pytest.param(
        doc(node={"metadata": "GENERATOR=grpc"}),
        "node.metadata",
        "expected an object, found string",
        id="metadata-string",
    ),
    pytest.param(
        doc(node={"metadata": {"a": [1, object()]}}),
        'node.metadata["a"][1]',
        "expected a JSON value, found object",
        id="metadata-not-json",
    ),
    pytest.param(
        doc(node={"metadata": {1: "x"}}),
        "node.metadata",
        "object keys must be strings, found number 1",
        id="metadata-int-key",
    ),
    # certificate_providers
    pytest.param(
        doc(certificate_providers=["default"]),
        "certificate_providers",
        "expected an object, found array",
        id="providers-array",
    ),
    pytest.param(
        doc(certificate_providers={"default": "file_watcher"}),
        FW,
        "expected an object, found string",
        id="provider-string",
    ),
    pytest.param(
        provider(config={"ca_certificate_file": "/ca.pem"}),
        f"{FW}.plugin_name",
        "missing; expected a string",
        id="provider-no-plugin-name",
    ),
    pytest.param(
        provider(plugin_name=1),
        f"{FW}.plugin_name",
        "expected a string, found number 1",
        id="provider-plugin-number",
    ),
    pytest.param(
        provider(plugin_name=""), f"{FW}.plugin_name", "is empty", id="provider-plugin-empty"
    ),
    pytest.param(
        provider(plugin_name="x", config="y"),
        f"{FW}.config",
        "expected an object, found string 'y'",
        id="provider-config-string",
    ),
    pytest.param(
        provider(plugin_name="file_watcher", config={"refresh_interval": "60s"}),
        f"{FW}.config",
        "file_watcher needs certificate_file, ca_certificate_file",
        id="file-watcher-no-files",
    ),
    pytest.param(
        provider(plugin_name="file_watcher"),
        f"{FW}.config",
        "file_watcher needs",
        id="file-watcher-no-config",
    ),
    pytest.param(
        provider(plugin_name="file_watcher", config={"private_key_file": "/k.pem"}),
        f"{FW}.config.certificate_file",
        "must be set together",
        id="file-watcher-key-only",
    ),
    pytest.param(
        provider(plugin_name="file_watcher", config={"ca_certificate_file": 5}),
        f"{FW}.config.ca_certificate_file",
        "expected a string, found number 5",
        id="file-watcher-ca-number",
    ),
    # authorities and templates (gRFC A47)
    pytest.param(
        doc(authorities=["a.com"]),
        "authorities",
        "expected an object, found array",
        id="auth-array",
    ),
    pytest.param(
        doc(authorities={"a.com": None}), AUTH, "expected an object, found null", id="auth-null"
    ),
    pytest.param(
        authority(client_listener_resource_name_template="xdstp://b.com/lds/%s"),
        f"{AUTH}.client_listener_resource_name_template",
        "must start with 'xdstp://a.com/', found 'xdstp://b.com/lds/%s'",
        id="auth-template-other-authority",
    ),
    pytest.param(
        authority(client_listener_resource_name_template="%s"),
        f"{AUTH}.client_listener_resource_name_template",
        "must start with 'xdstp://a.com/'",
        id="auth-template-old-style",
    ),
    pytest.param(
        authority(client_listener_resource_name_template="xdstp://a.com"),
        f"{AUTH}.client_listener_resource_name_template",
        "must start with 'xdstp://a.com/'",
        id="auth-template-no-slash",
    ),
    pytest.param(
        authority(client_listener_resource_name_template=3),
        f"{AUTH}.client_listener_resource_name_template",
        "expected a string, found number 3",
        id="auth-template-number",
    ),
    pytest.param(
        authority(xds_servers={"server_uri": "x"}),
        f"{AUTH}.xds_servers",
        "expected an array, found object",
        id="auth-servers-object",
    ),
    pytest.param(
        authority(xds_servers=[server(server_uri=_DROP)]),
        f"{AUTH}.xds_servers[0].server_uri",
        "missing",
        id="auth-server-uri-missing",
    ),
    pytest.param(
        authority(
            xds_servers=[
                server(channel_creds=[{"type": "tls", "config": {"certificate_file": "c"}}])
            ]
        ),
        f"{AUTH}.xds_servers[0].channel_creds[0].config.private_key_file",
        "must be set together",
        id="auth-server-tls",
    ),
    pytest.param(
        doc(client_default_listener_resource_name_template=["%s"]),
        "client_default_listener_resource_name_template",
        "expected a string, found array",
        id="client-template-array",
    ),
    pytest.param(
        doc(client_default_listener_resource_name_template="xdstp://x.com/lds/%s"),
        "client_default_listener_resource_name_template",
        "names authority 'x.com', which is not in authorities (authorities on offer: none)",
        id="client-template-unknown-authority",
    ),
    pytest.param(
        doc(
            client_default_listener_resource_name_template="xdstp://x.com/lds/%s",
            authorities={"a.com": {}},
        ),
        "client_default_listener_resource_name_template",
        "(authorities on offer: 'a.com')",
        id="client-template-authorities-on-offer",
    ),
    pytest.param(
        doc(client_default_listener_resource_name_template="xdstp:lds/%s"),
        "client_default_listener_resource_name_template",
        "must start with 'xdstp://<authority>/'",
        id="client-template-bad-xdstp",
    ),
    pytest.param(
        doc(server_listener_resource_name_template=1),
        "server_listener_resource_name_template",
        "expected a string, found number 1",
        id="server-template-number",
    ),
    pytest.param(
        doc(server_listener_resource_name_template="xdstp://s.com/lds/%s"),
        "server_listener_resource_name_template",
        "names authority 's.com'",
        id="server-template-unknown-authority",
    ),
]


@pytest.mark.parametrize("document, field, fragment", CASES)
def test_invalid_bootstrap(document: Any, field: str, fragment: str) -> None:
    inline = isinstance(document, str)
    source = "$GRPC_XDS_BOOTSTRAP_CONFIG" if inline else "<dict>"
    with pytest.raises(BootstrapError) as info:
        if inline:
            load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": document})
        else:
            load_bootstrap(document, environ={})
    error = info.value
    assert error.source == source
    assert error.field == field
    assert fragment in error.problem
    where = f"{source}: {field}" if field else source
    assert str(error).startswith(f"invalid xDS bootstrap ({where}): ")


@pytest.mark.parametrize(
    "content, fragment",
    [
        pytest.param(b"", "is empty; expected a JSON object", id="empty-file"),
        pytest.param(b"  \n", "is empty; expected a JSON object", id="blank-file"),
        pytest.param(b'{"xds_servers": [,]}', "malformed JSON at line 1 column 18", id="malformed"),
        pytest.param(b'{"node": "\xff"}', "is not UTF-8 text", id="not-utf8"),
        pytest.param(b"null", "top level must be a JSON object, found null", id="null"),
    ],
)
def test_invalid_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_bytes(content)
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(path, environ={})
    assert info.value.source == str(path)
    assert info.value.field == ""
    assert fragment in info.value.problem


@pytest.mark.parametrize(
    "make, os_text",
    [
        pytest.param(lambda p: p / "missing.json", "No such file or directory", id="missing"),
        pytest.param(lambda p: p, "Is a directory", id="unreadable-directory"),
        pytest.param(
            lambda p: p / "no-dir" / "bootstrap.json", "No such file or directory", id="missing-dir"
        ),
    ],
)
def test_unreadable_file(tmp_path: Path, make: Any, os_text: str) -> None:
    path = make(tmp_path)
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(str(path), environ={})
    message = str(info.value)
    assert info.value.source == str(path)
    assert os_text in message
    assert f"cannot read bootstrap file {str(path)!r}" in message


def test_json_text_passed_as_path_gets_a_hint() -> None:
    text = json.dumps({"xds_servers": []})
    with pytest.raises(BootstrapError, match="this looks like JSON: pass a dict"):
        load_bootstrap(text, environ={})


def test_wrong_argument_type() -> None:
    with pytest.raises(BootstrapError, match="expected a file path or a mapping, found int"):
        load_bootstrap(42, environ={})  # type: ignore[arg-type]


def test_error_names_the_env_source(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc(node={"metadata": []})))
    with pytest.raises(BootstrapError) as info:
        load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP": str(path)})
    assert str(info.value).startswith(
        f"invalid xDS bootstrap ($GRPC_XDS_BOOTSTRAP={path}: node.metadata): expected an object"
    )


def test_unknown_fields_are_ignored() -> None:
    document = doc(
        future_field={"x": 1},
        node={"id": "n", "unknown": [1], "locality": {"planet": "earth"}},
        xds_servers=[server(extra=True, channel_creds=[{"type": "insecure", "more": 1}])],
        authorities={"a.com": {"fallback_on_reachability_only": True}},
        certificate_providers={"p": {"plugin_name": "future_plugin", "config": {"any": [1]}}},
    )
    b = load_bootstrap(document, environ={})
    assert b.node.id == "n"
    assert b.certificate_providers["p"].plugin_name == "future_plugin"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("as_text", [False, True], ids=["dict", "json-text"])
def test_deeply_nested_metadata_is_an_error(as_text: bool) -> None:
    # Found by tests/property: 500 levels under node.metadata escaped as a
    # RecursionError (json.loads accepts up to ~1000 levels).
    document = doc(node={"id": "n", "metadata": {"deep": _nested(500)}})
    with pytest.raises(BootstrapError) as info:
        if as_text:
            servers = json.dumps(document["xds_servers"])
            deep = "[" * 500 + '"leaf"' + "]" * 500
            inline = f'{{"xds_servers": {servers}, "node": {{"metadata": {{"deep": {deep}}}}}}}'
            load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": inline})
        else:
            load_bootstrap(document, environ={})
    assert info.value.field.startswith('node.metadata["deep"][0]')
    assert "nested deeper than 32 levels" in str(info.value)


def test_metadata_that_contains_itself_is_an_error() -> None:
    metadata: dict[str, Any] = {}
    metadata["self"] = metadata
    with pytest.raises(BootstrapError, match="nested deeper than"):
        load_bootstrap(doc(node={"metadata": metadata}), environ={})


def test_metadata_nested_31_levels_loads() -> None:
    b = load_bootstrap(doc(node={"metadata": {"deep": _nested(31)}}), environ={})
    assert b.node.metadata["deep"][0][0][0] is not None
