"""The xDS bootstrap model: frozen, validated, ready to use.

Implements the bootstrap format of gRFC A27 (``xds_servers``, ``node``),
gRFC A29 (``certificate_providers``), gRFC A36
(``server_listener_resource_name_template``), gRFC A47 (``authorities`` and
``client_default_listener_resource_name_template``, federation and resource
name templating) and gRFC A65 (``tls`` channel credentials). See also
https://github.com/grpc/grpc/blob/master/doc/grpc_xds_bootstrap_format.md.

Objects here are built by :mod:`proxyless.bootstrap.loader`, which does every
check; nothing downstream re-validates. JSON objects kept as written
(``node.metadata``, credential and certificate provider configs) are deep
frozen: objects become read-only mappings and arrays become tuples;
:meth:`Node.metadata_json` gives back plain ``dict``/``list`` values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from proxyless.errors import BootstrapError

__all__ = [
    "Authority",
    "Bootstrap",
    "CertificateProviderInstance",
    "ChannelCreds",
    "Locality",
    "Node",
    "XdsServer",
]

#: Server feature that makes the client keep resources the server deletes (gRFC A53).
IGNORE_RESOURCE_DELETION = "ignore_resource_deletion"
#: Server feature that lets data errors drop cached resources (gRFC A88).
FAIL_ON_DATA_ERRORS = "fail_on_data_errors"

#: Server feature that makes the client speak delta (incremental) xDS to the
#: server instead of State of the World (a proxyless extension; gRPC ignores it).
DELTA_XDS = "delta_xds"

#: The resource name template used when ``authorities[name]`` gives none (gRFC A47).
DEFAULT_AUTHORITY_TEMPLATE = "xdstp://{name}/envoy.config.listener.v3.Listener/%s"

# RFC 3986 section 3.3 path characters besides the unreserved ones: '/',
# ':', '@' and the sub-delims. Everything else in a name substituted into an
# "xdstp:" template is percent-encoded (gRFC A47).
_PATH_SAFE = "/:@!$&'()*+,;="

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze_json(value: Any) -> Any:
    """Deep-freeze a JSON value: objects to read-only mappings, arrays to tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(v) for v in value)
    return value


def thaw_json(value: Any) -> Any:
    """The inverse of :func:`freeze_json`: plain, mutable ``dict``/``list`` values."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw_json(v) for v in value]
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def expand_template(template: str, name: str) -> str:
    """Replace every ``%s`` in ``template`` with ``name`` (gRFC A47).

    When the template is a new-style ``xdstp:`` name, ``name`` is
    percent-encoded except for the characters RFC 3986 allows in a path
    (including ``/``).
    """
    if template.startswith("xdstp:"):
        name = quote(name, safe=_PATH_SAFE)
    return template.replace("%s", name)


def _json_text(value: Any) -> str:
    return json.dumps(thaw_json(value), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ChannelCreds:
    """Credentials for the channel to an xDS server: the first supported
    ``channel_creds[]`` entry.

    ``type`` is ``insecure``, ``tls`` (gRFC A65: ``ca_certificate_file``,
    ``certificate_file``, ``private_key_file``, ``refresh_interval``) or
    ``google_default``; ``config`` is the entry's ``config`` object as written.
    """

    type: str
    config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __hash__(self) -> int:
        return hash((self.type, _hashable(self.config)))

    def __repr__(self) -> str:
        if not self.config:
            return f"ChannelCreds({self.type!r})"
        return f"ChannelCreds({self.type!r}, {_json_text(self.config)})"


@dataclass(frozen=True, slots=True)
class XdsServer:
    """One xDS management server (gRFC A27 ``xds_servers[]`` entry).

    ``server_uri`` is kept exactly as written (``host:port``,
    ``dns:///host:port``, ``unix:///path``, ``unix:path``, ``ipv4:...``).
    """

    server_uri: str
    channel_creds: ChannelCreds
    server_features: frozenset[str] = frozenset()

    @property
    def ignore_resource_deletion(self) -> bool:
        """``ignore_resource_deletion`` is among the server features (gRFC A53)."""
        return IGNORE_RESOURCE_DELETION in self.server_features

    @property
    def fail_on_data_errors(self) -> bool:
        """``fail_on_data_errors`` is among the server features (gRFC A88)."""
        return FAIL_ON_DATA_ERRORS in self.server_features

    @property
    def delta(self) -> bool:
        """``delta_xds`` is among the server features: ADS is spoken incrementally."""
        return DELTA_XDS in self.server_features

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity used to share one ADS stream per server.

        Equal for servers with the same URI and credentials, whatever their
        server features.
        """
        return (self.server_uri, self.channel_creds.type, _hashable(self.channel_creds.config))

    def __hash__(self) -> int:
        return hash((self.key, self.server_features))

    def __repr__(self) -> str:
        features = ",".join(sorted(self.server_features))
        return f"XdsServer({self.server_uri!r}, creds={self.channel_creds.type}, features=[{features}])"


@dataclass(frozen=True, slots=True)
class Locality:
    """Where the node runs (``node.locality``)."""

    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def __str__(self) -> str:
        parts = [p for p in (self.region, self.zone, self.sub_zone) if p]
        return "/".join(parts) if parts else "(empty)"


@dataclass(frozen=True, slots=True)
class Node:
    """The ``node`` sent to the xDS server, passed through unchanged.

    ``user_agent_name``, ``user_agent_version`` and ``client_features`` are
    filled in by the xDS client, never taken from the bootstrap (gRFC A27).
    """

    id: str = ""
    cluster: str = ""
    locality: Locality | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def metadata_json(self) -> dict[str, Any]:
        """``metadata`` as a fresh plain ``dict`` (arrays as lists), e.g. for a
        ``google.protobuf.Struct``."""
        result: dict[str, Any] = thaw_json(self.metadata)
        return result


@dataclass(frozen=True, slots=True)
class CertificateProviderInstance:
    """A ``certificate_providers`` entry (gRFC A29), e.g. ``file_watcher``."""

    plugin_name: str
    config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Authority:
    """An ``authorities`` entry (gRFC A47).

    ``client_listener_resource_name_template`` starts with
    ``xdstp://<name>/``. An empty ``xds_servers`` means: use the top-level
    ``xds_servers``.
    """

    name: str
    client_listener_resource_name_template: str
    xds_servers: tuple[XdsServer, ...] = ()


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """A validated xDS bootstrap.

    ``source`` says where it came from: ``$GRPC_XDS_BOOTSTRAP=/path``,
    ``$GRPC_XDS_BOOTSTRAP_CONFIG``, a file path, or ``<dict>``.
    """

    xds_servers: tuple[XdsServer, ...]
    node: Node = field(default_factory=Node)
    certificate_providers: Mapping[str, CertificateProviderInstance] = field(
        default_factory=lambda: _EMPTY
    )
    server_listener_resource_name_template: str | None = None
    client_default_listener_resource_name_template: str = "%s"
    authorities: Mapping[str, Authority] = field(default_factory=lambda: _EMPTY)
    source: str = "<dict>"

    def _authority(self, name: str) -> Authority:
        authority = self.authorities.get(name)
        if authority is None:
            offered = ", ".join(repr(a) for a in sorted(self.authorities)) or "none"
            raise BootstrapError(
                self.source,
                "authorities",
                f"authority {name!r} is not in the bootstrap (authorities on offer: {offered})",
            )
        return authority

    def servers_for_authority(self, authority: str | None) -> tuple[XdsServer, ...]:
        """The xDS servers to ask for resources of ``authority``.

        ``None`` means old-style names: the top-level ``xds_servers``. A string
        (``""`` is the key for ``xdstp:///...`` names) must be in
        ``authorities``; an authority listing no servers uses the top-level
        ones (gRFC A47).
        """
        if authority is None:
            return self.xds_servers
        return self._authority(authority).xds_servers or self.xds_servers

    def listener_resource_name(self, target_authority: str | None, name: str) -> str:
        """The Listener resource name for the channel target ``xds://<authority>/<name>``.

        Without an authority (``None`` or ``""``, as in ``xds:///name``) the
        ``client_default_listener_resource_name_template`` is used, with
        ``name`` percent-encoded only if the template starts with ``xdstp:``.
        With an authority, that authority's
        ``client_listener_resource_name_template`` is used with ``name``
        percent-encoded; an authority missing from ``authorities`` raises
        :class:`~proxyless.errors.BootstrapError` (gRFC A47).
        """
        if not target_authority:
            return expand_template(self.client_default_listener_resource_name_template, name)
        authority = self._authority(target_authority)
        return expand_template(authority.client_listener_resource_name_template, name)

    def describe(self) -> str:
        """A short multi-line summary: source, node, servers, providers, authorities."""
        node = self.node
        lines = [f"xDS bootstrap from {self.source}"]
        lines.append(f"  node id: {node.id or '(empty)'}")
        if node.cluster:
            lines.append(f"  node cluster: {node.cluster}")
        if node.locality is not None:
            lines.append(f"  node locality: {node.locality}")
        if node.metadata:
            lines.append(f"  node metadata keys: {', '.join(sorted(node.metadata))}")
        lines.extend(f"  xds server: {_describe_server(s)}" for s in self.xds_servers)
        for name, provider in sorted(self.certificate_providers.items()):
            lines.append(f"  certificate provider {name!r}: {provider.plugin_name}")
        lines.append(
            "  client listener name template: "
            f"{self.client_default_listener_resource_name_template}"
        )
        if self.server_listener_resource_name_template is not None:
            lines.append(
                f"  server listener name template: {self.server_listener_resource_name_template}"
            )
        for name, authority in sorted(self.authorities.items()):
            lines.append(
                f"  authority {name!r}: {authority.client_listener_resource_name_template}"
            )
            if not authority.xds_servers:
                lines.append("    xds servers: the top-level ones")
            lines.extend(f"    xds server: {_describe_server(s)}" for s in authority.xds_servers)
        return "\n".join(lines)

    def __repr__(self) -> str:
        servers = ", ".join(s.server_uri for s in self.xds_servers)
        extra = f", authorities=[{', '.join(sorted(self.authorities))}]" if self.authorities else ""
        return (
            f"Bootstrap(source={self.source!r}, node_id={self.node.id!r}, "
            f"xds_servers=[{servers}]{extra})"
        )


def _describe_server(server: XdsServer) -> str:
    features = ", ".join(sorted(server.server_features)) or "none"
    return f"{server.server_uri} (creds: {server.channel_creds.type}; features: {features})"
