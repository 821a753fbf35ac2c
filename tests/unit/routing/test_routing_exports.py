"""The public names of proxyless.routing and proxyless.lb, and their layering:
neither imports a transport or reads the clock."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module_name", ["proxyless.routing", "proxyless.lb"])
def test_all_is_unique_and_importable(module_name: str) -> None:
    # (its order is checked by ruff's RUF022)
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize(
    "module_name",
    [
        "proxyless.routing.request",
        "proxyless.routing.vhost",
        "proxyless.routing.match",
        "proxyless.routing.clusters",
        "proxyless.routing.hashing",
        "proxyless.routing.timeouts",
        "proxyless.routing.resolve",
        "proxyless.lb.pickers",
        "proxyless.lb.ring_hash",
        "proxyless.lb.maglev",
        "proxyless.lb.locality",
        "proxyless.lb.build",
        "proxyless.lb.priority",
        "proxyless.lb.cluster",
    ],
)
def test_modules_import_no_transport_and_read_no_clock(module_name: str) -> None:
    module = importlib.import_module(module_name)
    source = open(module.__file__ or "", encoding="utf-8").read()
    for forbidden in (
        "import grpc",
        "import httpx",
        "import time",
        "time.monotonic(",
        "time.time(",
    ):
        assert forbidden not in source, (module_name, forbidden)
