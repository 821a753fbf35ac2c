"""``proxyless.explain``: where would this call go, and why?

Given a target, a method (gRPC ``/package.Service/Method``) and metadata, it
runs the same request path a call would — virtual host (Envoy domain
precedence), first matching route, cluster choice with the weights on offer,
priority load and the endpoint the picker returns, the effective deadline
(gRFC A31) with its source, and the retry policy — without sending anything.
An error at any step is reported as the step that failed.

The picker is asked with a private random generator, so explaining does not
disturb the weighted picks of real calls (a round-robin picker still
advances by one).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from proxyless.errors import ProxylessError
from proxyless.mesh import Mesh
from proxyless.routing import RequestInfo, grpc_deadline, request_hash, route_label
from proxyless.runtime.target import TargetRuntime

__all__ = ["Explanation", "explain"]


@dataclass(slots=True)
class Explanation:
    target: str
    listener: str
    authority: str
    method: str
    ok: bool = False
    failed_step: str = ""
    error: str = ""
    virtual_host: str = ""
    domains: list[str] = field(default_factory=list)
    route: str = ""
    action: str = ""
    clusters: list[dict[str, Any]] = field(default_factory=list)
    cluster: str = ""
    cluster_type: str = ""
    lb_policy: str = ""
    priority_load: str = ""
    endpoint: str = ""
    endpoint_priority: int | None = None
    endpoint_locality: str = ""
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    timeout: float | None = None
    timeout_source: str = ""
    retry: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"target        {self.target}  (listener {self.listener!r}, authority {self.authority!r})"
        ]
        lines.append(f"method        {self.method}")
        if self.virtual_host:
            lines.append(f"virtual host  {self.virtual_host!r}  domains {', '.join(self.domains)}")
        if self.route:
            lines.append(f"route         {self.route}  -> {self.action}")
        if self.clusters:
            total = sum(c["weight"] for c in self.clusters) or 1
            split = ", ".join(
                f"{c['name']} {c['weight']} ({100 * c['weight'] / total:.0f}%)"
                for c in self.clusters
            )
            lines.append(f"clusters      {split}")
        if self.cluster:
            lines.append(f"cluster       {self.cluster!r}  {self.cluster_type}, {self.lb_policy}")
        if self.priority_load:
            lines.append(f"priorities    {self.priority_load}")
        if self.endpoint:
            lines.append(
                f"endpoint      {self.endpoint}  (priority {self.endpoint_priority}, "
                f"locality {self.endpoint_locality or '-'})"
            )
        for e in self.endpoints:
            flags = " ejected" if e["ejected"] else ""
            lines.append(
                f"                {e['address']:<24} P{e['priority']} {e['health']:<9} "
                f"weight {e['weight']} active {e['active']}{flags}"
            )
        if self.cluster:
            t = "none" if self.timeout is None else f"{self.timeout:g}s"
            lines.append(f"timeout       {t}  - {self.timeout_source or 'no deadline'}")
            lines.append(f"retries       {self.retry or 'none'}")
        if not self.ok:
            lines.append(f"FAILED at {self.failed_step}: {self.error}")
        return "\n".join(lines)


def explain(
    target: str,
    method: str,
    metadata: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    timeout: float | None = None,
    mesh: Mesh | None = None,
    wait: float = 5.0,
) -> Explanation:
    """Explain how a call to ``target`` with ``method`` and ``metadata`` is routed."""
    from proxyless.grpc._invocation import metadata_headers

    mesh = mesh or Mesh.default()
    rt: TargetRuntime = mesh.target(target)
    pairs = list(metadata.items()) if isinstance(metadata, dict) else list(metadata or [])
    request = RequestInfo(rt.authority, method, headers=metadata_headers(pairs))
    out = Explanation(target, rt.listener_name, rt.authority, method)
    step = "xDS config"
    try:
        state = rt.state(wait)
        snap, cache = state
        step = "virtual host"
        vhost = cache.select(request.authority)
        if vhost is not None:
            out.virtual_host, out.domains = vhost.name, list(vhost.domains)
        step = "route"
        rng = random.Random()
        result = rt.route(request, state)
        out.route = route_label(result.virtual_host, result.route)
        action = result.route_action
        if action is None:
            out.action = type(result.action).__name__
            raise ProxylessError(f"{result.describe()}: not a forwarding route")
        if action.weighted_clusters:
            out.clusters = [{"name": c.name, "weight": c.weight} for c in action.weighted_clusters]
            out.action = "weighted clusters"
        elif action.cluster_header:
            out.action = f"cluster from header {action.cluster_header!r}"
        else:
            out.action = f"cluster {action.cluster!r}"
        step = "cluster"
        name = result.cluster_name or ""
        out.cluster = name
        cluster = rt.cluster(snap, name)
        cc = cluster.config
        if cc.cluster is not None:
            out.cluster_type = cc.cluster.type
            out.lb_policy = type(cc.cluster.lb_policy).__name__
        out.priority_load = cluster.lb.load.describe()
        listener = snap.listener
        out.timeout, out.timeout_source = grpc_deadline(
            action, listener.max_stream_duration if listener else None, timeout
        )
        out.retry = _retry_text(result.retry_policy)
        for es in cluster.lb.endpoints:
            out.endpoints.append(
                {
                    "address": es.address,
                    "priority": es.priority,
                    "health": es.endpoint.health,
                    "weight": es.weight,
                    "active": es.active_requests,
                    "ejected": es.ejected,
                }
            )
        step = "endpoint"
        h = (
            request_hash(result.hash_policies, request, channel_id=0, rng=rng)
            if result.hash_policies
            else None
        )
        chosen = cluster.lb.pick(h, rng)
        out.endpoint = chosen.address
        out.endpoint_priority = chosen.priority
        loc = chosen.locality
        out.endpoint_locality = "/".join(p for p in (loc.region, loc.zone, loc.sub_zone) if p)
        out.ok = True
    except ProxylessError as exc:
        out.failed_step, out.error = step, str(exc)
    return out


def _retry_text(policy: Any) -> str:
    if policy is None:
        return ""
    conditions = ",".join(sorted(policy.retry_on)) or "-"
    per_try = f", per-try timeout {policy.per_try_timeout:g}s" if policy.per_try_timeout else ""
    return f"retry_on {conditions}, num_retries {policy.num_retries}{per_try}"
