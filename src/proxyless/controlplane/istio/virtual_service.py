"""Parse and validate VirtualService documents.

Follows Istio's VirtualService reference
(istio.io/latest/docs/reference/config/networking/virtual-service/): hosts,
HTTP routes with their matches, weighted destinations, timeout, retries,
fault injection, header operations, mirrors, rewrites and ``delegate``
(:mod:`.delegate`; a VirtualService without ``hosts`` is a delegate). Only
the mesh data plane is configured: a VirtualService bound only to gateways
is skipped by the loader, other ``gateways`` beside ``mesh`` are left out
(an info line), and a ``match`` whose own ``gateways`` do not include
``mesh`` is left out too (a route left without matches is dropped), as
istiod leaves them out of sidecar routes. Retry conditions are Envoy's
``x-envoy-retry-on`` and
``x-envoy-retry-grpc-on`` values or HTTP status codes, as Istio passes them
through; a fault abort's ``grpcStatus`` is a canonical gRPC status name. Fields
Istio defines but the embedded control plane does not translate are accepted
with a warning; fields Istio does not define are warned about as unknown.
"""

from __future__ import annotations

from typing import Any

from proxyless.controlplane.istio.model import (
    Destination,
    Fault,
    HeaderOps,
    Headers,
    HttpRoute,
    MatchRequest,
    Mirror,
    Retry,
    Rewrite,
    RouteDestination,
    StringMatch,
    VirtualService,
)
from proxyless.controlplane.istio.reader import DocReader
from proxyless.controlplane.istio.visibility import check_export_to
from proxyless.status_codes import GRPC_STATUS_NAMES

__all__ = ["RETRY_ON_VALUES", "parse_virtual_service"]

#: Envoy ``x-envoy-retry-on`` / ``x-envoy-retry-grpc-on`` conditions Istio passes through.
RETRY_ON_VALUES = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_ONLY_MESH = "only the mesh (sidecar/proxyless) data plane is configured"


def _string_match(r: DocReader, raw: Any, path: str) -> StringMatch | None:
    box = r.mapping(raw, path)
    if box is None:
        return None
    kinds = [k for k in ("exact", "prefix", "regex") if k in box]
    for key in box:
        if key not in ("exact", "prefix", "regex"):
            r.error(f"{path}.{key}", "unknown match type: use exact, prefix or regex")
    if len(kinds) != 1:
        if not kinds and box:
            return None
        r.error(path, "needs exactly one of exact, prefix or regex")
        return None
    value = r.string(box[kinds[0]], f"{path}.{kinds[0]}")
    if value is None:
        return None
    if kinds[0] == "regex" and not r.regex(value, f"{path}.regex"):
        return None
    return StringMatch(kinds[0], value)


def _named_matches(r: DocReader, raw: Any, path: str) -> tuple[tuple[str, StringMatch], ...]:
    box = r.mapping(raw, path)
    out = []
    for name, value in (box or {}).items():
        sub = f"{path}.{name}"
        if value == {} or value is None:
            # ``{}`` in headers means "present" in Istio; keep it as a prefix "" match.
            out.append((str(name).lower(), StringMatch("prefix", "")))
            continue
        m = _string_match(r, value, sub)
        if m is not None:
            out.append((str(name), m))
    return tuple(out)


_MATCH_FIELDS = (
    "name",
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "withoutHeaders",
    "queryParams",
    "ignoreUriCase",
    "port",
    "sourceLabels",
    "sourceNamespace",
    "gateways",
    "statPrefix",
)


def _match(r: DocReader, raw: Any, path: str) -> MatchRequest | None:
    box = r.mapping(raw, path, known=_MATCH_FIELDS)
    if box is None:
        return None
    headers = _named_matches(r, box.get("headers"), f"{path}.headers")
    return MatchRequest(
        name=r.string(box.get("name"), f"{path}.name") or "",
        uri=_string_match(r, box.get("uri"), f"{path}.uri"),
        scheme=_string_match(r, box.get("scheme"), f"{path}.scheme"),
        method=_string_match(r, box.get("method"), f"{path}.method"),
        authority=_string_match(r, box.get("authority"), f"{path}.authority"),
        headers=tuple((name.lower(), m) for name, m in headers),
        without_headers=tuple(
            (n.lower(), m)
            for n, m in _named_matches(r, box.get("withoutHeaders"), f"{path}.withoutHeaders")
        ),
        query_params=_named_matches(r, box.get("queryParams"), f"{path}.queryParams"),
        ignore_uri_case=bool(r.boolean(box.get("ignoreUriCase"), f"{path}.ignoreUriCase")),
        port=r.integer(box.get("port"), f"{path}.port", minimum=1, maximum=65535),
        source_labels=r.labels(box.get("sourceLabels"), f"{path}.sourceLabels"),
        source_namespace=r.string(box.get("sourceNamespace"), f"{path}.sourceNamespace") or "",
    )


def _destination(r: DocReader, raw: Any, path: str) -> Destination | None:
    box = r.mapping(raw, path, known=("host", "subset", "port"), required=True)
    if box is None:
        return None
    host = r.string(box.get("host"), f"{path}.host", required=True)
    subset = r.string(box.get("subset"), f"{path}.subset") or ""
    port = None
    if box.get("port") is not None:
        port_box = r.mapping(box.get("port"), f"{path}.port", known=("number",))
        port = r.integer(
            (port_box or {}).get("number"),
            f"{path}.port.number",
            minimum=1,
            maximum=65535,
            required=True,
        )
    if host is None:
        return None
    return Destination(host=host, subset=subset, port=port, path=path)


def _header_ops(r: DocReader, raw: Any, path: str) -> HeaderOps:
    box = r.mapping(raw, path, known=("set", "add", "remove"))
    if box is None:
        return HeaderOps()

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        sub = r.mapping(box.get(key), f"{path}.{key}")
        out = []
        for name, value in (sub or {}).items():
            text = r.string(value, f"{path}.{key}.{name}")
            if text is not None:
                out.append((str(name).lower(), text))
        return tuple(out)

    removes = []
    for i, name in enumerate(r.items(box.get("remove"), f"{path}.remove")):
        text = r.string(name, f"{path}.remove[{i}]", required=True)
        if text:
            removes.append(text.lower())
    return HeaderOps(set=pairs("set"), add=pairs("add"), remove=tuple(removes))


def _headers(r: DocReader, raw: Any, path: str) -> Headers | None:
    box = r.mapping(raw, path, known=("request", "response"))
    if box is None:
        return None
    return Headers(
        request=_header_ops(r, box.get("request"), f"{path}.request"),
        response=_header_ops(r, box.get("response"), f"{path}.response"),
    )


def _retry(r: DocReader, raw: Any, path: str) -> Retry | None:
    box = r.mapping(
        raw,
        path,
        known=("attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities", "backoff"),
        unsupported={"retryIgnorePreviousHosts": "", "retryRemoteLocalities": ""},
    )
    if box is None:
        return None
    attempts = r.integer(box.get("attempts"), f"{path}.attempts", minimum=0, required=True)
    per_try = r.duration(box.get("perTryTimeout"), f"{path}.perTryTimeout", positive=True)
    retry_on = None
    if box.get("retryOn") is not None:
        text = r.string(box.get("retryOn"), f"{path}.retryOn")
        conditions = [c.strip() for c in (text or "").split(",") if c.strip()]
        for cond in conditions:
            if cond not in RETRY_ON_VALUES and not (cond.isdigit() and 100 <= int(cond) <= 599):
                r.error(
                    f"{path}.retryOn",
                    f"unknown retry condition {cond!r}: use Envoy retry_on values "
                    "(5xx, connect-failure, unavailable, ...) or HTTP status codes",
                )
        retry_on = tuple(conditions)
    if box.get("backoff") is not None:
        r.duration(box.get("backoff"), f"{path}.backoff", positive=True)
        r.warn(f"{path}.backoff", "not supported, ignored: the client's default backoff applies")
    if attempts is None:
        return None
    return Retry(attempts=attempts, per_try_timeout=per_try, retry_on=retry_on, path=path)


def _fault(r: DocReader, raw: Any, path: str) -> Fault | None:
    box = r.mapping(raw, path, known=("delay", "abort"))
    if box is None:
        return None
    delay = None
    delay_percent = 100.0
    if box.get("delay") is not None:
        d = r.mapping(
            box["delay"],
            f"{path}.delay",
            known=("fixedDelay", "percentage", "percent"),
            unsupported={"exponentialDelay": ""},
        )
        if d is not None:
            delay = r.duration(d.get("fixedDelay"), f"{path}.delay.fixedDelay", positive=True)
            if delay is None and "fixedDelay" not in d:
                r.error(f"{path}.delay.fixedDelay", "is required")
            delay_percent = _fault_percent(r, d, f"{path}.delay")
    http_status = None
    grpc_status = None
    abort_percent = 100.0
    if box.get("abort") is not None:
        a = r.mapping(
            box["abort"],
            f"{path}.abort",
            known=("httpStatus", "grpcStatus", "percentage"),
            unsupported={"http2Error": ""},
        )
        if a is not None:
            http_status = r.integer(
                a.get("httpStatus"), f"{path}.abort.httpStatus", minimum=200, maximum=599
            )
            grpc_status = r.enum(a.get("grpcStatus"), f"{path}.abort.grpcStatus", GRPC_STATUS_NAMES)
            if (http_status is None) == (grpc_status is None) and r.ok:
                r.error(f"{path}.abort", "needs exactly one of httpStatus or grpcStatus")
            abort_percent = _fault_percent(r, a, f"{path}.abort")
    if delay is None and http_status is None and grpc_status is None:
        if r.ok:
            r.error(path, "needs a delay or an abort")
        return None
    return Fault(delay, delay_percent, http_status, grpc_status, abort_percent)


def _fault_percent(r: DocReader, box: dict[str, Any], path: str) -> float:
    if box.get("percentage") is not None:
        value = r.percent(box["percentage"], f"{path}.percentage")
        return 100.0 if value is None else value
    if box.get("percent") is not None:
        value = r.integer(box["percent"], f"{path}.percent", minimum=0, maximum=100)
        return 100.0 if value is None else float(value)
    return 100.0


_HTTP_ROUTE_FIELDS = (
    "name",
    "delegate",
    "match",
    "route",
    "timeout",
    "retries",
    "fault",
    "headers",
    "mirror",
    "mirrorPercentage",
    "mirrorPercent",
    "mirrors",
    "rewrite",
)
_HTTP_ROUTE_UNSUPPORTED = {
    "redirect": "",
    "directResponse": "",
    "corsPolicy": "",
    "mirror_percent": "",
}


def _http_route(r: DocReader, raw: Any, path: str) -> HttpRoute | None:
    box = r.mapping(raw, path, known=_HTTP_ROUTE_FIELDS, unsupported=_HTTP_ROUTE_UNSUPPORTED)
    if box is None:
        return None
    matches = []
    raw_matches = r.items(box.get("match"), f"{path}.match")
    for_gateways = 0
    for i, m in enumerate(raw_matches):
        gateways = m.get("gateways") if isinstance(m, dict) else None
        if isinstance(gateways, list) and gateways and "mesh" not in gateways:
            r.info(f"{path}.match[{i}].gateways", "this match is for gateways only; left out")
            for_gateways += 1
            continue
        parsed = _match(r, m, f"{path}.match[{i}]")
        if parsed is not None:
            matches.append(parsed)
    if raw_matches and for_gateways == len(raw_matches):
        return None  # every match is for gateways only: the route is not for the mesh
    if "route" not in box and "delegate" not in box:
        for key in ("redirect", "directResponse"):
            if key in box:
                # Valid Istio that the embedded control plane does not translate
                # (warned about above): the rule is left out, not the file.
                r.warn(path, f"a {key} rule is left out: its requests go to the next rule")
                return None
    delegate = _delegate(r, box.get("delegate"), f"{path}.delegate")
    if delegate is not None and box.get("route") is not None:
        r.error(f"{path}.delegate", "cannot be combined with route")
    dests = []
    raw_route = r.items(box.get("route"), f"{path}.route", required="delegate" not in box)
    for i, d in enumerate(raw_route):
        sub = f"{path}.route[{i}]"
        # A bare "-" item is an empty destination, which Istio refuses too.
        dbox = r.mapping(d, sub, known=("destination", "weight", "headers"), required=True)
        if dbox is None:
            continue
        dest = _destination(r, dbox.get("destination"), f"{sub}.destination")
        weight = r.integer(dbox.get("weight"), f"{sub}.weight", minimum=0, maximum=100)
        headers = _headers(r, dbox.get("headers"), f"{sub}.headers")
        if dest is not None:
            dests.append(RouteDestination(dest, weight, headers))
    if box.get("route") is not None and not raw_route:
        r.error(f"{path}.route", "must list at least one destination")
    mirrors = []
    if box.get("mirror") is not None:
        dest = _destination(r, box["mirror"], f"{path}.mirror")
        percent = 100.0
        if box.get("mirrorPercentage") is not None:
            percent = r.percent(box["mirrorPercentage"], f"{path}.mirrorPercentage") or 0.0
        elif box.get("mirrorPercent") is not None:
            percent = float(
                r.integer(box["mirrorPercent"], f"{path}.mirrorPercent", minimum=0, maximum=100)
                or 0
            )
        if dest is not None:
            mirrors.append(Mirror(dest, percent))
    elif box.get("mirrorPercentage") is not None:
        r.warn(f"{path}.mirrorPercentage", "ignored without mirror")
    for i, m in enumerate(r.items(box.get("mirrors"), f"{path}.mirrors")):
        sub = f"{path}.mirrors[{i}]"
        mbox = r.mapping(m, sub, known=("destination", "percentage"))
        if mbox is None:
            continue
        dest = _destination(r, mbox.get("destination"), f"{sub}.destination")
        percent = 100.0
        if mbox.get("percentage") is not None:
            percent = r.percent(mbox["percentage"], f"{sub}.percentage") or 0.0
        if dest is not None:
            mirrors.append(Mirror(dest, percent))
    rewrite = None
    if box.get("rewrite") is not None:
        rw = r.mapping(
            box["rewrite"],
            f"{path}.rewrite",
            known=("uri", "authority"),
            unsupported={"uriRegexRewrite": ""},
        )
        if rw is not None:
            rewrite = Rewrite(
                uri=r.string(rw.get("uri"), f"{path}.rewrite.uri"),
                authority=r.string(rw.get("authority"), f"{path}.rewrite.authority"),
            )
    return HttpRoute(
        path=path,
        name=r.string(box.get("name"), f"{path}.name") or "",
        matches=tuple(matches),
        route=tuple(dests),
        timeout=r.duration(box.get("timeout"), f"{path}.timeout"),
        retries=_retry(r, box.get("retries"), f"{path}.retries"),
        fault=_fault(r, box.get("fault"), f"{path}.fault"),
        headers=_headers(r, box.get("headers"), f"{path}.headers"),
        mirrors=tuple(mirrors),
        rewrite=rewrite,
        delegate=delegate,
    )


def _delegate(r: DocReader, raw: Any, path: str) -> tuple[str, str] | None:
    box = r.mapping(raw, path, known=("name", "namespace"))
    if box is None:
        return None
    name = r.string(box.get("name"), f"{path}.name", required=True)
    namespace = r.string(box.get("namespace"), f"{path}.namespace") or ""
    return None if name is None else (name, namespace)


def parse_virtual_service(r: DocReader, spec: dict[str, Any]) -> VirtualService | None:
    hosts = []
    for i, raw in enumerate(r.items(spec.get("hosts"), "spec.hosts")):
        host = r.string(raw, f"spec.hosts[{i}]", required=True)
        if host is not None:
            if host in hosts:
                r.error(f"spec.hosts[{i}]", f"duplicate host {host!r}")
            hosts.append(host)
    gateways = []
    for i, raw in enumerate(r.items(spec.get("gateways"), "spec.gateways")):
        gw = r.string(raw, f"spec.gateways[{i}]")
        if gw is not None:
            gateways.append(gw)
    if gateways and "mesh" in gateways and len(gateways) > 1:
        r.info("spec.gateways", f"gateways other than 'mesh' are left out ({_ONLY_MESH})")
    routes = []
    for i, raw in enumerate(r.items(spec.get("http"), "spec.http")):
        route = _http_route(r, raw, f"spec.http[{i}]")
        if route is not None:
            routes.append(route)
            if not hosts and route.delegate is not None:
                r.error(
                    f"spec.http[{i}].delegate",
                    "a delegate VirtualService (one without hosts) cannot delegate again",
                )
    if not spec.get("http"):
        r.warn("spec.http", "no http routes: the VirtualService changes nothing")
    export_to = tuple(str(x) for x in r.items(spec.get("exportTo"), "spec.exportTo"))
    problem = check_export_to(export_to)
    if problem is not None:
        r.error("spec.exportTo", problem)
    return VirtualService(
        source=r.source,
        hosts=tuple(hosts),
        http=tuple(routes),
        gateways=tuple(gateways),
        export_to=export_to,
    )
