"""Target names: ``xds:///name`` and ``xds://authority/name``.

gRFC A27/A47: the part after the authority is the data-plane name. Without
an authority the LDS resource name is the bootstrap's
``client_default_listener_resource_name_template`` with ``%s`` replaced by
the name; with one, the authority's ``client_listener_resource_name_template``
(an ``xdstp://`` name, percent-encoded). Virtual hosts are chosen by the
name itself (the data-plane authority), never by the LDS resource name.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from proxyless.bootstrap import Bootstrap
from proxyless.errors import InvalidTarget

__all__ = ["Target", "parse_target"]


@dataclass(frozen=True, slots=True)
class Target:
    uri: str
    authority: str | None  # the xDS authority (federation), None for the default
    name: str  # the data-plane name: also the authority used to pick a virtual host

    def listener_name(self, bootstrap: Bootstrap) -> str:
        return bootstrap.listener_resource_name(self.authority, self.name)


def parse_target(target: str) -> Target:
    """Parse ``xds:///name`` or ``xds://authority/name``; raises InvalidTarget."""
    if not isinstance(target, str):
        raise InvalidTarget(f"target must be a string like 'xds:///reviews:9080', not {target!r}")
    scheme, sep, rest = target.partition("://")
    if not sep or scheme != "xds":
        raise InvalidTarget(
            f"target {target!r} is not an xDS target: use 'xds:///<service>[:port]' "
            "or 'xds://<authority>/<service>'"
        )
    authority, slash, path = rest.partition("/")
    if not slash:
        raise InvalidTarget(
            f"target {target!r} has no '/' after the authority: did you mean 'xds:///{rest}'?"
        )
    name = unquote(path)
    if not name:
        raise InvalidTarget(f"target {target!r} names no service after 'xds://{authority}/'")
    if any(c.isspace() for c in name):
        raise InvalidTarget(f"target {target!r}: the service name contains white space")
    return Target(target, authority or None, name)
