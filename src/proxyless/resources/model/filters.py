"""HTTP filter configurations understood by proxyless (gRFC A39).

Covers ``envoy.extensions.filters.http.router.v3.Router``,
``envoy.extensions.filters.http.fault.v3.HTTPFault`` (gRFC A33) and
``envoy.extensions.filters.http.rbac.v3.RBAC`` / ``RBACPerRoute`` (gRFC A41).
The same classes serve as the top-level config in the listener's
``http_filters`` and as per-route overrides in ``typed_per_filter_config``.
Percentages are stored per million (``FractionalPercent`` scaled); durations
are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from proxyless.resources.model.matchers import HeaderMatcher
from proxyless.resources.model.rbac import Policy

__all__ = [
    "DisabledFilterConfig",
    "FaultAbort",
    "FaultDelay",
    "FaultFilterConfig",
    "FilterConfig",
    "RbacFilterConfig",
    "RouterFilterConfig",
]


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``HTTPFault.delay`` (``envoy.extensions.filters.common.fault.v3.FaultDelay``).

    ``fixed_delay`` is None when ``header_controlled`` is set (the delay then
    comes from the ``x-envoy-fault-delay-request`` header).
    """

    fixed_delay: float | None
    per_million: int
    header_controlled: bool = False


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """``HTTPFault.abort``: exactly one of ``http_status``/``grpc_status`` is set
    unless ``header_controlled`` (``x-envoy-fault-abort-request`` /
    ``x-envoy-fault-abort-grpc-request`` headers)."""

    http_status: int | None
    grpc_status: int | None
    per_million: int
    header_controlled: bool = False


@dataclass(frozen=True, slots=True)
class FaultFilterConfig:
    """``envoy.extensions.filters.http.fault.v3.HTTPFault`` (gRFC A33).

    The fault applies only when every matcher in ``headers`` matches, and
    only for requests to ``upstream_cluster`` when that is non-empty.
    ``max_active_faults`` None means unlimited. ``downstream_nodes`` is kept
    for completeness (Envoy matches it against ``x-envoy-downstream-service-node``).
    """

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    max_active_faults: int | None = None
    headers: tuple[HeaderMatcher, ...] = ()
    upstream_cluster: str = ""
    downstream_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterFilterConfig:
    """``envoy.extensions.filters.http.router.v3.Router``: must be the last filter.

    None of its fields change client behaviour; set ones are reported as ignored.
    """


@dataclass(frozen=True, slots=True)
class RbacFilterConfig:
    """``envoy.extensions.filters.http.rbac.v3.RBAC`` (or ``RBACPerRoute``), minimal.

    ``action`` is None when no ``rules`` are configured: no enforcement (Envoy:
    "If absent, no enforcing RBAC policy will be applied"). ``policy_names``
    are the keys of ``rules.policies`` in sorted order, and ``policies``
    the parsed policies in the same order (gRFC A41,
    :mod:`proxyless.resources.model.rbac`).
    """

    action: Literal["ALLOW", "DENY", "LOG"] | None = None
    policy_names: tuple[str, ...] = ()
    policies: tuple[Policy, ...] = ()


@dataclass(frozen=True, slots=True)
class DisabledFilterConfig:
    """A per-route ``envoy.config.route.v3.FilterConfig`` with ``disabled: true``:
    the named filter is switched off for that route / virtual host / cluster."""


#: What ``HttpFilter.config`` and ``typed_per_filter_config`` values can hold.
FilterConfig: TypeAlias = (
    FaultFilterConfig | RbacFilterConfig | RouterFilterConfig | DisabledFilterConfig
)
