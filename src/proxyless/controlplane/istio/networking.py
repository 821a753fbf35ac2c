"""Parse and validate networking.istio.io documents.

Follows Istio's reference for ServiceEntry, WorkloadEntry, VirtualService and
DestinationRule (istio.io/latest/docs/reference/config/networking/). Fields
Istio defines but the embedded control plane does not translate are accepted
with a warning; fields Istio does not define are warned about as unknown.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from proxyless.controlplane.istio.model import (
    ClientTls,
    ConnectionPool,
    ConsistentHash,
    Destination,
    DestinationRule,
    Fault,
    HeaderOps,
    Headers,
    HttpRoute,
    LocalityLb,
    MatchRequest,
    Mirror,
    OutlierDetection,
    Port,
    Retry,
    Rewrite,
    RouteDestination,
    ServiceEntry,
    StringMatch,
    Subset,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)
from proxyless.controlplane.istio.reader import DocReader
from proxyless.status_codes import GRPC_STATUS_NAMES

__all__ = [
    "RETRY_ON_VALUES",
    "parse_destination_rule",
    "parse_service_entry",
    "parse_virtual_service",
    "parse_workload_entry",
]

PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"}
)

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


# --- ServiceEntry / WorkloadEntry ---------------------------------------------------------


def _endpoint(r: DocReader, raw: Any, path: str, *, entry: bool) -> WorkloadEndpoint | None:
    known = ("address", "ports", "labels", "locality", "weight", "network", "serviceAccount")
    box = r.mapping(raw, path, known=known)
    if box is None:
        return None
    address = r.string(box.get("address"), f"{path}.address", required=True)
    if address is not None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            r.error(
                f"{path}.address",
                f"must be an IP address (DNS names and unix sockets are not supported), got {address!r}",
            )
            address = None
    ports: dict[str, int] = {}
    raw_ports = r.mapping(box.get("ports"), f"{path}.ports")
    for name, number in (raw_ports or {}).items():
        value = r.integer(number, f"{path}.ports.{name}", minimum=1, maximum=65535)
        if value is not None:
            ports[str(name)] = value
    locality = r.string(box.get("locality"), f"{path}.locality") or ""
    if locality and (locality.count("/") > 2 or any(not p for p in locality.split("/"))):
        r.error(
            f"{path}.locality",
            f"must be 'region', 'region/zone' or 'region/zone/subzone', got {locality!r}",
        )
    weight = r.integer(box.get("weight"), f"{path}.weight", minimum=0, maximum=2**32 - 1)
    if address is None:
        return None
    del entry
    return WorkloadEndpoint(
        address=address,
        ports=ports,
        labels=r.labels(box.get("labels"), f"{path}.labels"),
        locality=locality,
        weight=1 if weight in (None, 0) else weight,
        network=r.string(box.get("network"), f"{path}.network") or "",
        service_account=r.string(box.get("serviceAccount"), f"{path}.serviceAccount") or "",
        path=path,
    )


def parse_service_entry(r: DocReader, spec: dict[str, Any]) -> ServiceEntry | None:
    hosts: list[str] = []
    for i, raw in enumerate(r.items(spec.get("hosts"), "spec.hosts", required=True)):
        host = r.string(raw, f"spec.hosts[{i}]", required=True)
        if host is None:
            continue
        if host in hosts:
            r.error(f"spec.hosts[{i}]", f"duplicate host {host!r}")
        elif host.startswith("*"):
            r.error(
                f"spec.hosts[{i}]", f"wildcard hosts are not supported in a ServiceEntry ({host!r})"
            )
        else:
            hosts.append(host)
    if spec.get("hosts") is not None and not hosts and r.ok:
        r.error("spec.hosts", "must list at least one host")
    ports: list[Port] = []
    for i, raw in enumerate(r.items(spec.get("ports"), "spec.ports", required=True)):
        path = f"spec.ports[{i}]"
        box = r.mapping(raw, path, known=("number", "protocol", "name", "targetPort"))
        if box is None:
            continue
        number = r.integer(
            box.get("number"), f"{path}.number", minimum=1, maximum=65535, required=True
        )
        protocol = r.string(box.get("protocol"), f"{path}.protocol") or "TCP"
        if protocol.upper() not in PROTOCOLS:
            r.error(
                f"{path}.protocol",
                f"must be one of {', '.join(sorted(PROTOCOLS))}; got {protocol!r}",
            )
        name = r.string(box.get("name"), f"{path}.name", required=True)
        target = r.integer(box.get("targetPort"), f"{path}.targetPort", minimum=1, maximum=65535)
        if number is None or name is None:
            continue
        if any(p.number == number for p in ports):
            r.error(f"{path}.number", f"duplicate port {number}")
        elif any(p.name == name for p in ports):
            r.error(f"{path}.name", f"duplicate port name {name!r}")
        else:
            ports.append(Port(number, protocol.upper(), name, target))
            if protocol.upper() not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB"):
                r.warn(
                    f"{path}.protocol",
                    f"{protocol} ports get no HTTP routing; only HTTP, HTTP2 and GRPC are routed",
                )
    resolution = r.enum(
        spec.get("resolution", "STATIC"),
        "spec.resolution",
        ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
    )
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        r.error(
            "spec.resolution",
            f"{resolution} is not supported: list IP endpoints with resolution STATIC",
        )
    location = r.enum(
        spec.get("location", "MESH_INTERNAL"), "spec.location", ("MESH_INTERNAL", "MESH_EXTERNAL")
    )
    endpoints = []
    for i, raw in enumerate(r.items(spec.get("endpoints"), "spec.endpoints")):
        ep = _endpoint(r, raw, f"spec.endpoints[{i}]", entry=False)
        if ep is None:
            continue
        for port_name in ep.ports:
            if not any(p.name == port_name for p in ports):
                r.error(
                    f"spec.endpoints[{i}].ports.{port_name}",
                    f"no port named {port_name!r} in spec.ports",
                )
        endpoints.append(ep)
    selector = None
    if spec.get("workloadSelector") is not None:
        box = r.mapping(spec.get("workloadSelector"), "spec.workloadSelector", known=("labels",))
        selector = r.labels((box or {}).get("labels"), "spec.workloadSelector.labels")
        if not selector:
            r.error("spec.workloadSelector.labels", "must select at least one label")
        if endpoints:
            r.error("spec.workloadSelector", "cannot be combined with spec.endpoints")
    return ServiceEntry(
        source=r.source,
        hosts=tuple(hosts),
        ports=tuple(ports),
        endpoints=tuple(endpoints),
        workload_selector=selector,
        resolution=resolution or "STATIC",
        location=location or "MESH_INTERNAL",
    )


def parse_workload_entry(r: DocReader, spec: dict[str, Any]) -> WorkloadEntry | None:
    ep = _endpoint(r, spec, "spec", entry=True)
    return None if ep is None else WorkloadEntry(r.source, ep)


# --- VirtualService --------------------------------------------------------------------


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
    if box.get("gateways"):
        r.warn(f"{path}.gateways", f"not supported, ignored: {_ONLY_MESH}")
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
    "delegate": "",
    "corsPolicy": "",
    "mirror_percent": "",
}


def _http_route(r: DocReader, raw: Any, path: str) -> HttpRoute | None:
    box = r.mapping(raw, path, known=_HTTP_ROUTE_FIELDS, unsupported=_HTTP_ROUTE_UNSUPPORTED)
    if box is None:
        return None
    matches = []
    for i, m in enumerate(r.items(box.get("match"), f"{path}.match")):
        parsed = _match(r, m, f"{path}.match[{i}]")
        if parsed is not None:
            matches.append(parsed)
    dests = []
    raw_route = r.items(box.get("route"), f"{path}.route", required=True)
    for i, d in enumerate(raw_route):
        sub = f"{path}.route[{i}]"
        dbox = r.mapping(d, sub, known=("destination", "weight", "headers"))
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
    )


def parse_virtual_service(r: DocReader, spec: dict[str, Any]) -> VirtualService | None:
    hosts = []
    for i, raw in enumerate(r.items(spec.get("hosts"), "spec.hosts", required=True)):
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
    if gateways and "mesh" not in gateways:
        r.warn("spec.gateways", f"this VirtualService does not apply to the mesh ({_ONLY_MESH})")
    elif gateways and len(gateways) > 1:
        r.warn("spec.gateways", f"gateways other than 'mesh' are ignored ({_ONLY_MESH})")
    routes = []
    for i, raw in enumerate(r.items(spec.get("http"), "spec.http")):
        route = _http_route(r, raw, f"spec.http[{i}]")
        if route is not None:
            routes.append(route)
    if not spec.get("http"):
        r.warn("spec.http", "no http routes: the VirtualService changes nothing")
    export_to = tuple(str(x) for x in r.items(spec.get("exportTo"), "spec.exportTo"))
    return VirtualService(
        source=r.source,
        hosts=tuple(hosts),
        http=tuple(routes),
        gateways=tuple(gateways),
        export_to=export_to,
    )


# --- DestinationRule -------------------------------------------------------------------

_SIMPLE_LB = ("UNSPECIFIED", "LEAST_CONN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN")


def _consistent_hash(r: DocReader, raw: Any, path: str) -> ConsistentHash | None:
    box = r.mapping(
        raw,
        path,
        known=(
            "httpHeaderName",
            "httpCookie",
            "useSourceIp",
            "httpQueryParameterName",
            "ringHash",
            "maglev",
            "minimumRingSize",
        ),
    )
    if box is None:
        return None
    keys = [
        k
        for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
        if k in box
    ]
    if len(keys) != 1:
        r.error(
            path,
            "needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        )
        return None
    cookie = None
    cookie_path = ""
    cookie_ttl = None
    if "httpCookie" in box:
        c = r.mapping(box["httpCookie"], f"{path}.httpCookie", known=("name", "path", "ttl"))
        if c is not None:
            cookie = r.string(c.get("name"), f"{path}.httpCookie.name", required=True)
            cookie_path = r.string(c.get("path"), f"{path}.httpCookie.path") or ""
            cookie_ttl = r.duration(c.get("ttl"), f"{path}.httpCookie.ttl")
    algorithm = "ring"
    ring_size = r.integer(
        box.get("minimumRingSize"), f"{path}.minimumRingSize", minimum=1, maximum=8_388_608
    )
    table = None
    if "ringHash" in box and "maglev" in box:
        r.error(path, "ringHash and maglev are mutually exclusive")
    if "ringHash" in box:
        rh = r.mapping(box["ringHash"], f"{path}.ringHash", known=("minimumRingSize",))
        ring_size = r.integer(
            (rh or {}).get("minimumRingSize"),
            f"{path}.ringHash.minimumRingSize",
            minimum=1,
            maximum=8_388_608,
        )
    if "maglev" in box:
        algorithm = "maglev"
        mg = r.mapping(box["maglev"], f"{path}.maglev", known=("tableSize",))
        table = r.integer(
            (mg or {}).get("tableSize"), f"{path}.maglev.tableSize", minimum=1, maximum=5_000_011
        )
    return ConsistentHash(
        header=r.string(box.get("httpHeaderName"), f"{path}.httpHeaderName"),
        cookie=cookie,
        cookie_path=cookie_path,
        cookie_ttl=cookie_ttl,
        source_ip=bool(r.boolean(box.get("useSourceIp"), f"{path}.useSourceIp")),
        query_parameter=r.string(
            box.get("httpQueryParameterName"), f"{path}.httpQueryParameterName"
        ),
        algorithm=algorithm,
        minimum_ring_size=ring_size,
        maglev_table_size=table,
    )


def _locality_lb(r: DocReader, raw: Any, path: str) -> LocalityLb | None:
    box = r.mapping(raw, path, known=("enabled", "distribute", "failover", "failoverPriority"))
    if box is None:
        return None
    distribute = []
    for i, d in enumerate(r.items(box.get("distribute"), f"{path}.distribute")):
        sub = f"{path}.distribute[{i}]"
        dbox = r.mapping(d, sub, known=("from", "to"))
        if dbox is None:
            continue
        frm = r.string(dbox.get("from"), f"{sub}.from", required=True)
        to = r.mapping(dbox.get("to"), f"{sub}.to", required=True) or {}
        weights = []
        for loc, w in to.items():
            value = r.integer(w, f"{sub}.to.{loc}", minimum=0, maximum=100)
            if value is not None:
                weights.append((str(loc), value))
        if weights and sum(w for _, w in weights) != 100:
            r.error(f"{sub}.to", f"weights must sum to 100, got {sum(w for _, w in weights)}")
        if frm is not None:
            distribute.append((frm, tuple(weights)))
    failover = []
    for i, f in enumerate(r.items(box.get("failover"), f"{path}.failover")):
        sub = f"{path}.failover[{i}]"
        fbox = r.mapping(f, sub, known=("from", "to"))
        if fbox is None:
            continue
        frm = r.string(fbox.get("from"), f"{sub}.from", required=True)
        to_region = r.string(fbox.get("to"), f"{sub}.to", required=True)
        if frm is not None and to_region is not None:
            if frm == to_region:
                r.error(sub, "from and to must be different regions")
            failover.append((frm, to_region))
    if distribute and failover:
        r.error(path, "distribute and failover are mutually exclusive")
    priority = tuple(
        str(x) for x in r.items(box.get("failoverPriority"), f"{path}.failoverPriority")
    )
    if priority:
        r.warn(f"{path}.failoverPriority", "not supported, ignored: region/zone proximity is used")
    return LocalityLb(
        enabled=r.boolean(box.get("enabled"), f"{path}.enabled"),
        distribute=tuple(distribute),
        failover=tuple(failover),
        failover_priority=priority,
    )


def _connection_pool(r: DocReader, raw: Any, path: str) -> ConnectionPool | None:
    box = r.mapping(raw, path, known=("tcp", "http"))
    if box is None:
        return None
    tcp = (
        r.mapping(
            box.get("tcp"),
            f"{path}.tcp",
            known=("maxConnections", "connectTimeout", "maxConnectionDuration", "idleTimeout"),
            unsupported={"tcpKeepalive": ""},
        )
        or {}
    )
    http = (
        r.mapping(
            box.get("http"),
            f"{path}.http",
            known=(
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
                "maxConcurrentStreams",
            ),
            unsupported={"h2UpgradePolicy": "", "useClientProtocol": ""},
        )
        or {}
    )
    u32 = 2**32 - 1
    if "maxConnectionDuration" in tcp:
        r.warn(f"{path}.tcp.maxConnectionDuration", "not supported, ignored")
    return ConnectionPool(
        max_connections=r.integer(
            tcp.get("maxConnections"), f"{path}.tcp.maxConnections", minimum=1, maximum=u32
        ),
        connect_timeout=r.duration(
            tcp.get("connectTimeout"), f"{path}.tcp.connectTimeout", positive=True
        ),
        http1_max_pending_requests=r.integer(
            http.get("http1MaxPendingRequests"),
            f"{path}.http.http1MaxPendingRequests",
            minimum=1,
            maximum=u32,
        ),
        http2_max_requests=r.integer(
            http.get("http2MaxRequests"), f"{path}.http.http2MaxRequests", minimum=1, maximum=u32
        ),
        max_requests_per_connection=r.integer(
            http.get("maxRequestsPerConnection"),
            f"{path}.http.maxRequestsPerConnection",
            minimum=0,
            maximum=u32,
        ),
        max_retries=r.integer(
            http.get("maxRetries"), f"{path}.http.maxRetries", minimum=0, maximum=u32
        ),
        idle_timeout=r.duration(http.get("idleTimeout"), f"{path}.http.idleTimeout"),
        max_concurrent_streams=r.integer(
            http.get("maxConcurrentStreams"),
            f"{path}.http.maxConcurrentStreams",
            minimum=1,
            maximum=2**31 - 1,
        ),
    )


def _outlier(r: DocReader, raw: Any, path: str) -> OutlierDetection | None:
    box = r.mapping(
        raw,
        path,
        known=(
            "consecutiveErrors",
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
        ),
    )
    if box is None:
        return None
    u32 = 2**32 - 1
    c5 = r.integer(
        box.get("consecutive5xxErrors"), f"{path}.consecutive5xxErrors", minimum=0, maximum=u32
    )
    if box.get("consecutiveErrors") is not None:
        legacy = r.integer(
            box.get("consecutiveErrors"), f"{path}.consecutiveErrors", minimum=0, maximum=u32
        )
        r.warn(f"{path}.consecutiveErrors", "deprecated: use consecutive5xxErrors")
        if c5 is None:
            c5 = legacy
    split = bool(
        r.boolean(
            box.get("splitExternalLocalOriginErrors"), f"{path}.splitExternalLocalOriginErrors"
        )
    )
    local = r.integer(
        box.get("consecutiveLocalOriginFailures"),
        f"{path}.consecutiveLocalOriginFailures",
        minimum=0,
        maximum=u32,
    )
    if local is not None and not split:
        r.error(
            f"{path}.consecutiveLocalOriginFailures",
            "requires splitExternalLocalOriginErrors: true",
        )
    return OutlierDetection(
        consecutive_5xx=c5,
        consecutive_gateway_errors=r.integer(
            box.get("consecutiveGatewayErrors"),
            f"{path}.consecutiveGatewayErrors",
            minimum=0,
            maximum=u32,
        ),
        consecutive_local_origin_failures=local,
        split_external_local_origin_errors=split,
        interval=r.duration(box.get("interval"), f"{path}.interval", positive=True),
        base_ejection_time=r.duration(
            box.get("baseEjectionTime"), f"{path}.baseEjectionTime", positive=True
        ),
        max_ejection_percent=r.integer(
            box.get("maxEjectionPercent"), f"{path}.maxEjectionPercent", minimum=0, maximum=100
        ),
        min_health_percent=r.integer(
            box.get("minHealthPercent"), f"{path}.minHealthPercent", minimum=0, maximum=100
        ),
        path=path,
    )


def _tls(r: DocReader, raw: Any, path: str) -> ClientTls | None:
    box = r.mapping(
        raw,
        path,
        known=("mode", "sni", "subjectAltNames"),
        unsupported={
            "clientCertificate": "",
            "privateKey": "",
            "caCertificates": "",
            "credentialName": "",
            "insecureSkipVerify": "",
            "caCrl": "",
        },
    )
    if box is None:
        return None
    mode = r.enum(
        box.get("mode", "DISABLE"), f"{path}.mode", ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
    )
    if mode in ("SIMPLE", "MUTUAL"):
        r.warn(
            f"{path}.mode",
            f"{mode} is not supported: traffic stays plaintext; use ISTIO_MUTUAL or DISABLE",
        )
    elif mode == "ISTIO_MUTUAL":
        r.warn(
            f"{path}.mode",
            "ISTIO_MUTUAL is validated but not translated yet: traffic stays plaintext",
        )
    sans = tuple(str(s) for s in r.items(box.get("subjectAltNames"), f"{path}.subjectAltNames"))
    return ClientTls(
        mode=mode or "DISABLE",
        sni=r.string(box.get("sni"), f"{path}.sni") or "",
        subject_alt_names=sans,
    )


def _traffic_policy(
    r: DocReader, raw: Any, path: str, *, port_level: bool = False
) -> TrafficPolicy | None:
    known = ["loadBalancer", "connectionPool", "outlierDetection", "tls"]
    if not port_level:
        known.append("portLevelSettings")
    else:
        known.append("port")
    box = r.mapping(raw, path, known=known, unsupported={"tunnel": "", "proxyProtocol": ""})
    if box is None:
        return None
    simple = None
    chash = None
    locality = None
    if box.get("loadBalancer") is not None:
        lb_path = f"{path}.loadBalancer"
        lb = r.mapping(
            box["loadBalancer"],
            lb_path,
            known=("simple", "consistentHash", "localityLbSetting", "warmupDurationSecs"),
        )
        if lb is not None:
            if "simple" in lb and "consistentHash" in lb:
                r.error(lb_path, "simple and consistentHash are mutually exclusive")
            simple = r.enum(lb.get("simple"), f"{lb_path}.simple", _SIMPLE_LB)
            if simple == "LEAST_CONN":
                simple = "LEAST_REQUEST"
            if simple == "PASSTHROUGH":
                r.warn(f"{lb_path}.simple", "PASSTHROUGH is not supported: ROUND_ROBIN is used")
            chash = _consistent_hash(r, lb.get("consistentHash"), f"{lb_path}.consistentHash")
            locality = _locality_lb(r, lb.get("localityLbSetting"), f"{lb_path}.localityLbSetting")
            if lb.get("warmupDurationSecs") is not None:
                r.duration(lb["warmupDurationSecs"], f"{lb_path}.warmupDurationSecs")
                r.warn(f"{lb_path}.warmupDurationSecs", "not supported, ignored")
    levels: list[tuple[int, TrafficPolicy]] = []
    for i, raw_level in enumerate(
        r.items(box.get("portLevelSettings"), f"{path}.portLevelSettings")
    ):
        sub = f"{path}.portLevelSettings[{i}]"
        policy = _traffic_policy(r, raw_level, sub, port_level=True)
        lbox = raw_level if isinstance(raw_level, dict) else {}
        pbox = r.mapping(lbox.get("port"), f"{sub}.port", known=("number",), required=True)
        number = r.integer(
            (pbox or {}).get("number"),
            f"{sub}.port.number",
            minimum=1,
            maximum=65535,
            required=pbox is not None,
        )
        if policy is not None and number is not None:
            if any(n == number for n, _ in levels):
                r.error(f"{sub}.port.number", f"duplicate port {number}")
            levels.append((number, policy))
    return TrafficPolicy(
        simple_lb=simple,
        consistent_hash=chash,
        locality_lb=locality,
        connection_pool=_connection_pool(r, box.get("connectionPool"), f"{path}.connectionPool"),
        outlier_detection=_outlier(r, box.get("outlierDetection"), f"{path}.outlierDetection"),
        tls=_tls(r, box.get("tls"), f"{path}.tls"),
        port_level=tuple(levels),
    )


def parse_destination_rule(r: DocReader, spec: dict[str, Any]) -> DestinationRule | None:
    host = r.string(spec.get("host"), "spec.host", required=True)
    if spec.get("workloadSelector") is not None:
        r.warn("spec.workloadSelector", "not supported, ignored: the rule applies to every client")
    policy = _traffic_policy(r, spec.get("trafficPolicy"), "spec.trafficPolicy")
    subsets: list[Subset] = []
    for i, raw in enumerate(r.items(spec.get("subsets"), "spec.subsets")):
        path = f"spec.subsets[{i}]"
        box = r.mapping(raw, path, known=("name", "labels", "trafficPolicy"))
        if box is None:
            continue
        name = r.string(box.get("name"), f"{path}.name", required=True)
        labels = r.labels(box.get("labels"), f"{path}.labels")
        sub_policy = _traffic_policy(r, box.get("trafficPolicy"), f"{path}.trafficPolicy")
        if name is None:
            continue
        if any(s.name == name for s in subsets):
            r.error(f"{path}.name", f"duplicate subset name {name!r}")
            continue
        if "|" in name:
            r.error(
                f"{path}.name", f"must not contain '|' (it separates cluster name parts): {name!r}"
            )
            continue
        subsets.append(Subset(name, labels, sub_policy, path))
    if host is None:
        return None
    return DestinationRule(
        source=r.source, host=host, subsets=tuple(subsets), traffic_policy=policy
    )
