"""Find, read and validate the xDS bootstrap.

Where it comes from (gRPC's bootstrap discovery, see
https://github.com/grpc/grpc/blob/master/doc/grpc_xds_bootstrap_format.md):

1. ``GRPC_XDS_BOOTSTRAP``: the path of a JSON file. If it is set, it wins;
   a missing or bad file is an error, never a reason to try the next source.
2. ``GRPC_XDS_BOOTSTRAP_CONFIG``: the JSON itself.
3. Or the caller passes a file path or a ``dict`` to :func:`load_bootstrap`.

The fields are those of gRFC A27 (``xds_servers``, ``node``), A29
(``certificate_providers``), A36 (``server_listener_resource_name_template``),
A47 (``authorities``, ``client_default_listener_resource_name_template``) and
A65 (``tls`` channel credentials). Unknown fields are ignored; a JSON ``null``
counts as absent. Every problem raises :class:`~proxyless.errors.BootstrapError`
naming the source and the JSON path of the field.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from proxyless.bootstrap.model import (
    DEFAULT_AUTHORITY_TEMPLATE,
    Authority,
    Bootstrap,
    CertificateProviderInstance,
    ChannelCreds,
    Locality,
    Node,
    XdsServer,
    freeze_json,
)
from proxyless.errors import BootstrapError

__all__ = [
    "ENV_BOOTSTRAP",
    "ENV_BOOTSTRAP_CONFIG",
    "SUPPORTED_CHANNEL_CREDS",
    "legacy_flag_warnings",
    "load_bootstrap",
]

logger = logging.getLogger("proxyless.bootstrap")

ENV_BOOTSTRAP = "GRPC_XDS_BOOTSTRAP"
ENV_BOOTSTRAP_CONFIG = "GRPC_XDS_BOOTSTRAP_CONFIG"

#: ``channel_creds[].type`` values recognised, in no particular order: the
#: first entry whose type is one of these is used (gRFC A27, A65).
SUPPORTED_CHANNEL_CREDS = ("insecure", "tls", "google_default")

#: Legacy feature switches of gRPC; the features they guarded are always on here.
_LEGACY_FLAGS = {
    "GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT": "xDS security (gRFC A29)",
    "GRPC_XDS_EXPERIMENTAL_ENABLE_RETRY": "xDS retries (gRFC A44)",
    "GRPC_XDS_EXPERIMENTAL_FAULT_INJECTION": "xDS fault injection (gRFC A33)",
    "GRPC_XDS_EXPERIMENTAL_RBAC": "xDS RBAC (gRFC A41)",
    "GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG": "custom LB policies from xDS (gRFC A52)",
    "GRPC_EXPERIMENTAL_ENABLE_OUTLIER_DETECTION": "outlier detection (gRFC A50)",
}

# protobuf JSON form of google.protobuf.Duration, non-negative: "600s", "1.5s".
_DURATION = re.compile(r"(\d+)(\.\d{1,9})?s")

_FILE_FIELDS = ("certificate_file", "private_key_file", "ca_certificate_file")
#: How deep ``node.metadata`` and ``config`` objects may nest. Real ones nest a
#: few levels; the limit keeps a pathological document (or a dict that
#: contains itself) an error instead of a RecursionError. Each level is two
#: messages once ``node.metadata`` is a ``google.protobuf.Struct``, so this
#: also stays within protobuf's default recursion limit of 100 on the server.
MAX_JSON_DEPTH = 32


def legacy_flag_warnings(environ: Mapping[str, str]) -> list[str]:
    """One warning per legacy gRPC feature switch set to ``false`` in ``environ``.

    The switches are accepted and ignored: the features they once guarded
    cannot be turned off.
    """
    warnings = []
    for name, feature in _LEGACY_FLAGS.items():
        if environ.get(name, "").strip().lower() == "false":
            warnings.append(
                f"{name}=false is ignored: {feature} is always enabled and cannot be turned off"
            )
    return warnings


def load_bootstrap(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Bootstrap:
    """Load and validate the xDS bootstrap.

    ``config`` is a file path, the bootstrap as a mapping, or ``None`` to
    read ``$GRPC_XDS_BOOTSTRAP`` (a file path, which wins) or else
    ``$GRPC_XDS_BOOTSTRAP_CONFIG`` (inline JSON) from ``environ``
    (default: ``os.environ``). Raises :class:`~proxyless.errors.BootstrapError`.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    for warning in legacy_flag_warnings(env):
        logger.warning("%s", warning)

    document: Any
    if config is None:
        path = env.get(ENV_BOOTSTRAP, "")
        inline = env.get(ENV_BOOTSTRAP_CONFIG, "")
        if path:
            source = f"${ENV_BOOTSTRAP}={path}"
            document = _parse_json(_read_file(path, source, from_env=True), source)
        elif inline:
            source = f"${ENV_BOOTSTRAP_CONFIG}"
            document = _parse_json(inline, source)
        else:
            raise BootstrapError(
                "<environment>",
                "",
                f"no xDS bootstrap: neither {ENV_BOOTSTRAP} (the path of a bootstrap JSON "
                f"file) nor {ENV_BOOTSTRAP_CONFIG} (the bootstrap JSON itself) is set; "
                "set one of them, or pass a file path or a dict to load_bootstrap()",
            )
    elif isinstance(config, Mapping):
        source = "<dict>"
        document = config
    elif isinstance(config, (str, os.PathLike)):
        source = os.fspath(config)
        document = _parse_json(_read_file(source, source, from_env=False), source)
    else:
        raise BootstrapError(
            "<argument>",
            "",
            f"expected a file path or a mapping, found {type(config).__name__}",
        )
    bootstrap = _Parser(source).bootstrap(document)
    logger.debug("loaded xDS bootstrap\n%s", bootstrap.describe())
    return bootstrap


def _read_file(path: str, source: str, *, from_env: bool) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = f"cannot read bootstrap file {path!r}: {reason}"
        if from_env:
            problem += (
                f"; point {ENV_BOOTSTRAP} at a readable bootstrap file, or unset it"
                f" to use {ENV_BOOTSTRAP_CONFIG}"
            )
        elif path.lstrip().startswith("{"):
            problem += "; this looks like JSON: pass a dict, or set " + ENV_BOOTSTRAP_CONFIG
        raise BootstrapError(source, "", problem) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BootstrapError(
            source,
            "",
            f"bootstrap file {path!r} is not UTF-8 text: {exc.reason} at byte {exc.start}",
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str, source: str) -> Any:
    if not text.strip():
        raise BootstrapError(source, "", "is empty; expected a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BootstrapError(
            source, "", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BootstrapError(source, "", f"malformed JSON: {exc}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _key(name: str) -> str:
    return f"[{json.dumps(name)}]"


class _Parser:
    """Walks the JSON document; every error names ``source`` and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> BootstrapError:
        return BootstrapError(self.source, field, problem)

    # -- typed access --------------------------------------------------------

    def expect(self, value: Any, kind: str, path: str) -> Any:
        ok = {
            "string": isinstance(value, str),
            "object": isinstance(value, Mapping),
            "array": isinstance(value, (list, tuple)),
        }[kind]
        if not ok:
            article = "an" if kind[0] in "aeiou" else "a"
            raise self.fail(path, f"expected {article} {kind}, found {_type_name(value)}")
        return value

    def optional(self, obj: Mapping[str, Any], key: str, kind: str, path: str) -> Any:
        value = obj.get(key)
        if value is None:
            return None
        return self.expect(value, kind, f"{path}.{key}" if path else key)

    def required(self, obj: Mapping[str, Any], key: str, kind: str, path: str) -> Any:
        field = f"{path}.{key}" if path else key
        if obj.get(key) is None:
            raise self.fail(
                field, f"missing; expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
            )
        return self.optional(obj, key, kind, path)

    def json_value(self, value: Any, path: str, depth: int = 0) -> Any:
        """Check ``value`` holds only JSON types (for mappings built in Python)
        nested at most :data:`MAX_JSON_DEPTH` levels."""
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if depth >= MAX_JSON_DEPTH and isinstance(value, (Mapping, list, tuple)):
            raise self.fail(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, Mapping):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise self.fail(path, f"object keys must be strings, found {_type_name(k)}")
                self.json_value(v, f"{path}{_key(k)}", depth + 1)
            return value
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.json_value(v, f"{path}[{i}]", depth + 1)
            return value
        raise self.fail(path, f"expected a JSON value, found {_type_name(value)}")

    def config_object(self, obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
        config = self.optional(obj, "config", "object", path)
        if config is None:
            return MappingProxyType({})
        self.json_value(config, f"{path}.config")
        frozen: Mapping[str, Any] = freeze_json(config)
        return frozen

    # -- the document --------------------------------------------------------

    def bootstrap(self, document: Any) -> Bootstrap:
        if not isinstance(document, Mapping):
            raise self.fail(
                "", f"the top level must be a JSON object, found {_type_name(document)}"
            )
        if document.get("xds_servers") is None:
            raise self.fail(
                "xds_servers", "missing; the bootstrap must list at least one xDS server"
            )
        servers = self.servers(document, "xds_servers", "", allow_empty=False)
        authorities = self.authorities(document)
        client_template = (
            self.optional(document, "client_default_listener_resource_name_template", "string", "")
            or "%s"
        )
        self.check_xdstp(
            client_template, "client_default_listener_resource_name_template", authorities
        )
        server_template = self.optional(
            document, "server_listener_resource_name_template", "string", ""
        )
        if server_template is not None:
            self.check_xdstp(server_template, "server_listener_resource_name_template", authorities)
        return Bootstrap(
            xds_servers=servers,
            node=self.node(document),
            certificate_providers=self.certificate_providers(document),
            server_listener_resource_name_template=server_template,
            client_default_listener_resource_name_template=client_template,
            authorities=MappingProxyType(authorities),
            source=self.source,
        )

    def servers(
        self, obj: Mapping[str, Any], key: str, path: str, *, allow_empty: bool
    ) -> tuple[XdsServer, ...]:
        field = f"{path}.{key}" if path else key
        entries = self.optional(obj, key, "array", path)
        if not entries:
            if allow_empty:
                return ()
            raise self.fail(field, "is empty; the bootstrap must list at least one xDS server")
        return tuple(self.server(entry, f"{field}[{i}]") for i, entry in enumerate(entries))

    def server(self, value: Any, path: str) -> XdsServer:
        obj = self.expect(value, "object", path)
        uri = self.required(obj, "server_uri", "string", path)
        if not uri.strip():
            raise self.fail(f"{path}.server_uri", "is empty; expected an address such as host:port")
        features = self.optional(obj, "server_features", "array", path) or ()
        for i, feature in enumerate(features):
            self.expect(feature, "string", f"{path}.server_features[{i}]")
        return XdsServer(
            server_uri=uri,
            channel_creds=self.channel_creds(obj, path),
            server_features=frozenset(features),
        )

    def channel_creds(self, server: Mapping[str, Any], path: str) -> ChannelCreds:
        field = f"{path}.channel_creds"
        entries = self.required(server, "channel_creds", "array", path)
        if not entries:
            raise self.fail(
                field, f"is empty; expected at least one of: {', '.join(SUPPORTED_CHANNEL_CREDS)}"
            )
        seen = []
        for i, entry in enumerate(entries):
            entry_path = f"{field}[{i}]"
            obj = self.expect(entry, "object", entry_path)
            creds_type = self.required(obj, "type", "string", entry_path)
            config = self.config_object(obj, entry_path)
            if creds_type in SUPPORTED_CHANNEL_CREDS:
                if creds_type == "tls":
                    self.check_certificate_files(config, f"{entry_path}.config")
                return ChannelCreds(type=creds_type, config=config)
            seen.append(creds_type)
        raise self.fail(
            field,
            f"no supported channel credentials type: found {', '.join(map(repr, seen))}; "
            f"supported: {', '.join(SUPPORTED_CHANNEL_CREDS)}",
        )

    def check_certificate_files(self, config: Mapping[str, Any], path: str) -> None:
        """The file fields shared by ``tls`` creds (A65) and ``file_watcher`` (A29)."""
        for name in (*_FILE_FIELDS, "spiffe_trust_bundle_map_file"):
            value = self.optional(config, name, "string", path)
            if value is not None and not value:
                raise self.fail(f"{path}.{name}", "is empty; expected a file path")
        has_cert = config.get("certificate_file") is not None
        has_key = config.get("private_key_file") is not None
        if has_cert != has_key:
            present, missing = (
                ("certificate_file", "private_key_file")
                if has_cert
                else ("private_key_file", "certificate_file")
            )
            raise self.fail(
                f"{path}.{missing}",
                f"missing; certificate_file and private_key_file must be set together "
                f"(only {present} is set)",
            )
        interval = self.optional(config, "refresh_interval", "string", path)
        if interval is not None:
            match = _DURATION.fullmatch(interval)
            if match is None:
                raise self.fail(
                    f"{path}.refresh_interval",
                    f'expected a duration in seconds such as "600s", found {interval!r}',
                )
            if float(match.group(1) + (match.group(2) or "")) <= 0:
                raise self.fail(f"{path}.refresh_interval", "must be greater than 0s")

    def node(self, document: Mapping[str, Any]) -> Node:
        obj = self.optional(document, "node", "object", "")
        if obj is None:
            return Node()
        # user_agent_name, user_agent_version and client_features are set by
        # the xDS client, never read from the bootstrap (gRFC A27).
        node_id = self.optional(obj, "id", "string", "node") or ""
        cluster = self.optional(obj, "cluster", "string", "node") or ""
        locality = None
        loc = self.optional(obj, "locality", "object", "node")
        if loc is not None:
            locality = Locality(
                region=self.optional(loc, "region", "string", "node.locality") or "",
                zone=self.optional(loc, "zone", "string", "node.locality") or "",
                sub_zone=self.optional(loc, "sub_zone", "string", "node.locality") or "",
            )
        metadata = self.optional(obj, "metadata", "object", "node")
        if metadata is None:
            return Node(id=node_id, cluster=cluster, locality=locality)
        self.json_value(metadata, "node.metadata")
        frozen: Mapping[str, Any] = freeze_json(metadata)
        return Node(id=node_id, cluster=cluster, locality=locality, metadata=frozen)

    def certificate_providers(
        self, document: Mapping[str, Any]
    ) -> Mapping[str, CertificateProviderInstance]:
        obj = self.optional(document, "certificate_providers", "object", "")
        providers: dict[str, CertificateProviderInstance] = {}
        for name, entry in (obj or {}).items():
            path = f"certificate_providers{_key(name)}"
            entry_obj = self.expect(entry, "object", path)
            plugin = self.required(entry_obj, "plugin_name", "string", path)
            if not plugin:
                raise self.fail(f"{path}.plugin_name", 'is empty; expected e.g. "file_watcher"')
            config = self.config_object(entry_obj, path)
            if plugin == "file_watcher":
                self.check_certificate_files(config, f"{path}.config")
                if not any(
                    config.get(k) is not None
                    for k in (
                        "certificate_file",
                        "ca_certificate_file",
                        "spiffe_trust_bundle_map_file",
                    )
                ):
                    raise self.fail(
                        f"{path}.config",
                        "file_watcher needs certificate_file, ca_certificate_file "
                        "or spiffe_trust_bundle_map_file",
                    )
            providers[name] = CertificateProviderInstance(plugin_name=plugin, config=config)
        return MappingProxyType(providers)

    def authorities(self, document: Mapping[str, Any]) -> dict[str, Authority]:
        obj = self.optional(document, "authorities", "object", "")
        authorities: dict[str, Authority] = {}
        for name, entry in (obj or {}).items():
            path = f"authorities{_key(name)}"
            entry_obj = self.expect(entry, "object", path)
            template = self.optional(
                entry_obj, "client_listener_resource_name_template", "string", path
            ) or DEFAULT_AUTHORITY_TEMPLATE.format(name=name)
            prefix = f"xdstp://{name}/"
            if not template.startswith(prefix):
                raise self.fail(
                    f"{path}.client_listener_resource_name_template",
                    f"must start with {prefix!r}, found {template!r}",
                )
            servers = self.servers(entry_obj, "xds_servers", path, allow_empty=True)
            authorities[name] = Authority(
                name=name, client_listener_resource_name_template=template, xds_servers=servers
            )
        return authorities

    def check_xdstp(self, template: str, field: str, authorities: Mapping[str, Authority]) -> None:
        """A new-style template must name an authority listed in ``authorities`` (A47)."""
        if not template.startswith("xdstp:"):
            return
        if not template.startswith("xdstp://"):
            raise self.fail(
                field, f"an xdstp: name must start with 'xdstp://<authority>/', found {template!r}"
            )
        authority = template[len("xdstp://") :].split("/", 1)[0]
        if authority not in authorities:
            offered = ", ".join(repr(a) for a in sorted(authorities)) or "none"
            raise self.fail(
                field,
                f"names authority {authority!r}, which is not in authorities "
                f"(authorities on offer: {offered})",
            )
