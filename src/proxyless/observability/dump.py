"""The process's mesh state as JSON: what ``/config_dump`` and ``/clusters``
of the admin HTTP endpoint return (:mod:`proxyless.admin`), for
applications without a gRPC server; the same facts CSDS gives, plus what
only the data path knows — each cluster's endpoints with their health,
ejection and load, and its circuit breaker and retry budget usage (Envoy's
``/clusters`` covers the same ground).
"""

from __future__ import annotations

from typing import Any

from proxyless.mesh import Mesh

__all__ = ["clusters", "config_dump"]


def config_dump(mesh: Mesh) -> dict[str, Any]:
    """Node, xDS servers and every subscribed resource's status."""
    node = mesh.bootstrap.node
    return {
        "node": {"id": node.id, "cluster": node.cluster},
        "bootstrap": mesh.bootstrap.source,
        "servers": mesh.xds_client.server_states(),
        "resources": [s.as_dict() for s in mesh.xds_client.dump()],
    }


def clusters(mesh: Mesh) -> list[dict[str, Any]]:
    """Each cluster's endpoints, breaker, retry budget and TLS state."""
    out = []
    for rt in mesh.clusters:
        breaker = rt.breakers.default
        budget = breaker.retry_budget
        tls = rt.tls
        tls_state: str | None = None
        if tls is not None:
            try:
                current = tls.current()
                who = current.identity.spiffe_id if current.identity else None
                tls_state = f"ready v{current.version} ({who or 'no client certificate'})"
            except Exception as exc:
                tls_state = f"not ready: {exc}"
        out.append(
            {
                "name": rt.name,
                "endpoints": [
                    {
                        "address": es.address,
                        "priority": es.priority,
                        "weight": es.weight,
                        "health": es.endpoint.health,
                        "ejected": es.ejected,
                        "draining": es.draining,
                        "connectivity": es.connectivity,
                        "active_requests": es.active_requests,
                        "total_requests": es.total_requests,
                        "total_successes": es.total_successes,
                        "total_errors": es.total_errors,
                    }
                    for es in rt.endpoints()
                ],
                "circuit_breaker": {
                    "requests": breaker.requests,
                    "max_requests": breaker.max_requests,
                    "pending_requests": breaker.pending_requests,
                    **breaker.stats,
                },
                "retry_budget": {"active": budget.active, "limit": budget.limit()},
                "outlier_detection": rt.outlier is not None,
                "tls": tls_state,
            }
        )
    return out
