"""The public names of proxyless.resilience."""

from __future__ import annotations

import importlib

import pytest

import proxyless.resilience as resilience

MODULES = ["breaker", "budget", "fault", "outcome", "outlier", "retry"]


def test_all_is_sorted_and_resolves() -> None:
    assert resilience.__all__ == sorted(resilience.__all__, key=lambda n: (not n.isupper(), n))
    for name in resilience.__all__:
        assert hasattr(resilience, name), name


@pytest.mark.parametrize("module", MODULES)
def test_module_exports_resolve(module: str) -> None:
    mod = importlib.import_module(f"proxyless.resilience.{module}")
    assert mod.__doc__ and ("gRFC" in mod.__doc__ or "Envoy" in mod.__doc__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
