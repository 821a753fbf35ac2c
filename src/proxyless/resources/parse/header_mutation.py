"""Parse the header mutations of a route, virtual host, route configuration or
weighted cluster: ``request_headers_to_add``/``_remove`` and
``response_headers_to_add``/``_remove``.

Follows Envoy's ``HeaderValueOption`` (``envoy.config.core.v3.base.proto``):
``append_action`` (append, add if absent, overwrite) or the deprecated
``append`` boolean, never both. Pseudo-headers (``:authority`` ...) and
``host`` cannot be added, nor pseudo-headers or ``host`` removed, as Envoy's
header mutation rules forbid.
"""

from __future__ import annotations

from typing import Any

from proxyless.resources.model.route import HeaderValueOption
from proxyless.resources.parse.common import Ctx, join, unhandled

__all__ = ["header_mutations"]

_APPEND_ACTIONS = {
    0: "append_if_exists_or_add",
    1: "add_if_absent",
    2: "overwrite_if_exists_or_add",
    3: "overwrite_if_exists",
}


def _header_name_ok(name: str, *, removing: bool) -> bool:
    if not name or name.startswith(":") or any(c.isspace() for c in name):
        return False
    return not (removing and name == "host")


def _header_options(ctx: Ctx, path: str, msgs: Any) -> tuple[HeaderValueOption, ...]:
    out = []
    for i, opt in enumerate(msgs):
        opath = f"{path}[{i}]"
        unhandled(ctx, opt, opath, ("header", "append", "append_action", "keep_empty_value"))
        header = opt.header
        key = header.key.lower()
        if not _header_name_ok(key, removing=False) or key == "host":
            ctx.error(join(opath, "header.key"), f"cannot add header {header.key!r}")
            continue
        if header.value:
            value = header.value
        else:
            try:
                value = bytes(header.raw_value).decode()
            except UnicodeDecodeError:
                ctx.error(join(opath, "header.raw_value"), "is not valid UTF-8")
                continue
        action = _APPEND_ACTIONS.get(int(opt.append_action))
        if action is None:
            ctx.error(join(opath, "append_action"), f"unknown action {opt.append_action}")
            continue
        if opt.HasField("append"):
            if int(opt.append_action) != 0:
                ctx.error(opath, "append and append_action cannot both be set")
                continue
            action = "append_if_exists_or_add" if opt.append.value else "overwrite_if_exists_or_add"
        out.append(
            HeaderValueOption(
                key=key,
                value=value,
                append_action=action,  # type: ignore[arg-type]
                keep_empty_value=bool(opt.keep_empty_value),
            )
        )
    return tuple(out)


def _header_names(ctx: Ctx, path: str, names: Any) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(names):
        lowered = name.lower()
        if not _header_name_ok(lowered, removing=True):
            ctx.error(f"{path}[{i}]", f"cannot remove header {name!r}")
            continue
        out.append(lowered)
    return tuple(out)


def header_mutations(
    ctx: Ctx, path: str, msg: Any
) -> tuple[
    tuple[HeaderValueOption, ...], tuple[str, ...], tuple[HeaderValueOption, ...], tuple[str, ...]
]:
    if not (
        msg.request_headers_to_add
        or msg.request_headers_to_remove
        or msg.response_headers_to_add
        or msg.response_headers_to_remove
    ):
        return (), (), (), ()  # most routes and virtual hosts change no header
    return (
        _header_options(ctx, join(path, "request_headers_to_add"), msg.request_headers_to_add),
        _header_names(ctx, join(path, "request_headers_to_remove"), msg.request_headers_to_remove),
        _header_options(ctx, join(path, "response_headers_to_add"), msg.response_headers_to_add),
        _header_names(
            ctx, join(path, "response_headers_to_remove"), msg.response_headers_to_remove
        ),
    )
