"""Bookinfo's networking samples, as this project writes them, and the services they route.

``data/bookinfo/`` (next to the control-plane e2e tests) holds the Bookinfo
services as ServiceEntries on 127.0.0.1 (ports filled in per test run), the
DestinationRule with every subset, and one file per routing sample: all
services to v1, reviews 50/50 v1/v3, 80/20 v1/v2 and 50/50 v2/v3, the user
jason to reviews v2, a delay and an abort for jason's ratings calls, httpbin
mirrored to v2, and a reviews timeout and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template

import yaml

__all__ = ["DATA", "SAMPLES", "WORKLOADS", "mesh_text", "services_text", "yaml_hosts"]

DATA = Path(__file__).parents[1] / "e2e" / "controlplane" / "data" / "bookinfo"

SAMPLES = (
    "virtual-service-all-v1.yaml",
    "virtual-service-reviews-50-v3.yaml",
    "virtual-service-reviews-80-20.yaml",
    "virtual-service-reviews-v2-v3.yaml",
    "virtual-service-reviews-test-v2.yaml",
    "virtual-service-ratings-test-delay.yaml",
    "virtual-service-ratings-test-abort.yaml",
    "virtual-service-httpbin-mirror.yaml",
    "virtual-service-reviews-timeout.yaml",
    "virtual-service-reviews-retries.yaml",
)

#: Workloads of the services (``service_version``), one backend each.
WORKLOADS = (
    "productpage_v1",
    "details_v1",
    "reviews_v1",
    "reviews_v2",
    "reviews_v3",
    "ratings_v1",
    "ratings_v2",
    "httpbin_v1",
    "httpbin_v2",
)


def services_text(ports: Mapping[str, int]) -> str:
    """The ServiceEntries with each workload's port (``ports[workload]``)."""
    return Template((DATA / "services.yaml").read_text()).substitute(ports)


def mesh_text(ports: Mapping[str, int], sample: str | None = None) -> str:
    """Services, DestinationRules and (if given) one routing sample, as one YAML stream."""
    parts = [services_text(ports), (DATA / "destination-rule-all.yaml").read_text()]
    if sample is not None:
        parts.append((DATA / sample).read_text())
    return "\n---\n".join(parts)


def yaml_hosts(sample: str) -> list[str]:
    """The hosts the VirtualServices of ``sample`` route (short names, as written)."""
    docs = yaml.safe_load_all((DATA / sample).read_text())
    return [host for doc in docs if doc for host in doc["spec"]["hosts"]]
