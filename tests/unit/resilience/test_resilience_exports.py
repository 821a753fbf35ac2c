"""The public names of proxyless.resilience."""

from __future__ import annotations

import importlib

import pytest

import proxyless.resilience as resilience

MODULES = ["breaker", "budget", "fault", "outcome", "outlier", "retry"]


def test_all_resolves() -> None:
    # (the order of __all__ is checked by ruff's RUF022)
    for name in resilience.__all__:
        assert hasattr(resilience, name), name


@pytest.mark.parametrize("module", MODULES)
def test_module_exports_resolve(module: str) -> None:
    mod = importlib.import_module(f"proxyless.resilience.{module}")
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
