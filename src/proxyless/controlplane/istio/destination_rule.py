"""Parse and validate DestinationRule documents.

Follows Istio's DestinationRule reference
(istio.io/latest/docs/reference/config/networking/destination-rule/): a host,
a traffic policy (load balancer, consistent hash, locality load balancing,
connection pool, outlier detection, client TLS, port-level settings) and named
subsets with their own policy. ``LEAST_CONN`` is read as ``LEAST_REQUEST``,
as Istio does; ``tls`` is translated into TLS clusters
(:mod:`.upstream_tls`): ``ISTIO_MUTUAL`` with the mesh's certificates,
``SIMPLE`` and ``MUTUAL`` with PEM files (``credentialName``, a Kubernetes
Secret, is an error: the embedded control plane has none, and a cluster the
mesh says is TLS never goes out plaintext); ``PASSTHROUGH`` and
``workloadSelector`` are accepted with a warning. Fields
Istio defines but the embedded control plane does not translate are accepted
with a warning; fields Istio does not define are warned about as unknown.
"""

from __future__ import annotations

from typing import Any

from proxyless.controlplane.istio.model import (
    ClientTls,
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    LocalityLb,
    OutlierDetection,
    Subset,
    TrafficPolicy,
)
from proxyless.controlplane.istio.reader import DocReader
from proxyless.controlplane.istio.visibility import check_export_to

__all__ = ["parse_destination_rule"]

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
        known=(
            "mode",
            "sni",
            "subjectAltNames",
            "clientCertificate",
            "privateKey",
            "caCertificates",
            "credentialName",
        ),
        unsupported={"insecureSkipVerify": "", "caCrl": ""},
    )
    if box is None:
        return None
    mode = r.enum(
        box.get("mode", "DISABLE"), f"{path}.mode", ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
    )
    files = {
        key: r.string(box.get(key), f"{path}.{key}") or ""
        for key in ("clientCertificate", "privateKey", "caCertificates")
    }
    if box.get("credentialName") is not None:
        r.string(box.get("credentialName"), f"{path}.credentialName")
        r.error(
            f"{path}.credentialName",
            "Kubernetes Secrets are not available to the embedded control plane; "
            "give the PEM files as caCertificates (and clientCertificate, privateKey for MUTUAL)",
        )
    if mode == "MUTUAL" and not (files["clientCertificate"] and files["privateKey"]):
        r.error(path, "MUTUAL needs clientCertificate and privateKey (PEM file paths)")
    elif mode != "MUTUAL" and (files["clientCertificate"] or files["privateKey"]):
        r.warn(path, f"clientCertificate and privateKey are ignored with mode {mode}")
    if mode in ("DISABLE", "ISTIO_MUTUAL") and files["caCertificates"]:
        r.warn(f"{path}.caCertificates", f"ignored with mode {mode}")
    sans = tuple(str(s) for s in r.items(box.get("subjectAltNames"), f"{path}.subjectAltNames"))
    return ClientTls(
        mode=mode or "DISABLE",
        sni=r.string(box.get("sni"), f"{path}.sni") or "",
        subject_alt_names=sans,
        client_certificate=files["clientCertificate"] if mode == "MUTUAL" else "",
        private_key=files["privateKey"] if mode == "MUTUAL" else "",
        ca_certificates=files["caCertificates"] if mode in ("SIMPLE", "MUTUAL") else "",
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
    export_to = tuple(str(x) for x in r.items(spec.get("exportTo"), "spec.exportTo"))
    problem = check_export_to(export_to)
    if problem is not None:
        r.error("spec.exportTo", problem)
    if host is None:
        return None
    return DestinationRule(
        source=r.source,
        host=host,
        subsets=tuple(subsets),
        traffic_policy=policy,
        export_to=export_to,
    )
