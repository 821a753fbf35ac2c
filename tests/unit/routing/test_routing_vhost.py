"""Virtual host selection: Envoy domain precedence (gRFC A28)."""

from __future__ import annotations

import pytest

from proxyless.resources.model import RouteConfiguration, VirtualHost
from proxyless.routing import VirtualHostCache, domain_match_rank, select_virtual_host


def _rc(*domain_lists: tuple[str, ...]) -> RouteConfiguration:
    return RouteConfiguration(
        name="rc",
        virtual_hosts=tuple(
            VirtualHost(name=f"vh{i}", domains=domains, routes=())
            for i, domains in enumerate(domain_lists)
        ),
    )


CASES = [
    pytest.param([("foo.com",), ("*",)], "foo.com", "vh0", id="exact-beats-star"),
    pytest.param([("*.foo.com",), ("foo.com",)], "foo.com", "vh1", id="exact-beats-suffix"),
    pytest.param([("*.foo.com",), ("bar.*",)], "bar.foo.com", "vh0", id="suffix-beats-prefix"),
    pytest.param(
        [("*.foo.com",), ("*.bar.foo.com",)], "a.bar.foo.com", "vh1", id="longest-suffix-wins"
    ),
    pytest.param([("foo.*",), ("foo.bar.*",)], "foo.bar.baz", "vh1", id="longest-prefix-wins"),
    pytest.param([("bar.*",), ("*",)], "bar.com", "vh0", id="prefix-beats-star"),
    pytest.param([("*-bar.foo.com",), ("*",)], "-bar.foo.com", "vh1", id="suffix-never-empty"),
    pytest.param([("*-bar.foo.com",)], "baz-bar.foo.com", "vh0", id="suffix-nonempty"),
    pytest.param([("foo.*",), ("*",)], "foo.", "vh1", id="prefix-never-empty"),
    pytest.param([("foo.com",)], "FOO.Com", "vh0", id="case-insensitive"),
    pytest.param([("foo.com",)], "bar.com", None, id="no-match"),
    pytest.param([("foo.com",)], "foo.com:8080", None, id="port-not-stripped"),
    pytest.param([("foo.com",), ("foo.com:8080",)], "foo.com:8080", "vh1", id="port-exact"),
    pytest.param([("foo.*",)], "foo.com:8080", "vh0", id="port-prefix-wildcard"),
    pytest.param([("*.com",)], "foo.com:80", None, id="port-breaks-suffix"),
    pytest.param([("a.com",), ("a.com",)], "a.com", "vh0", id="duplicate-first-wins"),
    pytest.param([("*",), ("*",)], "x", "vh0", id="star-first-wins"),
    pytest.param([], "x", None, id="no-virtual-hosts"),
    # Envoy: a ``*`` that neither starts nor ends the domain is a literal.
    pytest.param([("svc.*:9000",), ("*",)], "svc.*:9000", "vh0", id="inner-star-literal"),
    pytest.param([("svc.*:9000",), ("*",)], "svc.a:9000", "vh1", id="inner-star-no-wildcard"),
    pytest.param([("a-*:80",)], "a-b:80", None, id="star-before-port-literal"),
    pytest.param([("a-*:80",)], "A-*:80", "vh0", id="star-before-port-exact"),
    pytest.param([("*.a.*",)], "x.a.*", "vh0", id="leading-star-wins"),
    pytest.param([("*.a.*",)], "x.a.b", None, id="trailing-star-then-literal"),
    pytest.param([("a*b*",)], "a*bc", "vh0", id="trailing-star-inner-literal"),
    pytest.param([("a*b*",)], "axbc", None, id="inner-star-not-wildcard"),
]


@pytest.mark.parametrize(("domains", "authority", "expected"), CASES)
def test_select_virtual_host(
    domains: list[tuple[str, ...]], authority: str, expected: str | None
) -> None:
    rc = _rc(*domains)
    plain = select_virtual_host(rc, authority)
    cache = VirtualHostCache(rc)
    cached = cache.select(authority)
    again = cache.select(authority)
    assert (plain.name if plain else None) == expected
    assert (cached.name if cached else None) == expected
    assert again is cached


@pytest.mark.parametrize(
    ("pattern", "host", "rank"),
    [
        pytest.param("a.com", "a.com", (3, 5), id="exact"),
        pytest.param("*.com", "a.com", (2, 5), id="suffix"),
        pytest.param("a.*", "a.com", (1, 3), id="prefix"),
        pytest.param("*", "", (0, 1), id="star-matches-anything"),
        pytest.param("*.com", ".com", None, id="suffix-empty"),
        pytest.param("svc.*:9000", "svc.*:9000", (3, 10), id="inner-star-exact"),
        pytest.param("svc.*:9000", "svc.x:9000", None, id="inner-star-literal"),
    ],
)
def test_domain_match_rank(pattern: str, host: str, rank: tuple[int, int] | None) -> None:
    assert domain_match_rank(pattern, host) == rank


def test_cache_is_bounded() -> None:
    cache = VirtualHostCache(_rc(("*",)), max_entries=4)
    for i in range(10):
        assert cache.select(f"h{i}") is not None
        assert len(cache._memo) <= 4


def test_cache_remembers_misses() -> None:
    cache = VirtualHostCache(_rc(("a.com",)))
    assert cache.select("b.com") is None
    assert "b.com" in cache._memo
    assert cache.domains() == ["a.com"]
