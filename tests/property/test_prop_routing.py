"""Properties of the pure routing functions (``proxyless.routing``).

Each property is checked against an oracle written here from the rule's
text, not from the implementation.

=====================================  ===========================================  ========
property                               why (the rule)                               examples
=====================================  ===========================================  ========
virtual-host choice follows Envoy's    exact > longest suffix wildcard > longest    300
precedence (``select_virtual_host``    prefix wildcard > ``*``; a wildcard never
and ``VirtualHostCache`` agree)        matches the empty string; case-insensitive
header matchers: absent headers        gRFC A28/A41: an absent header never         400
                                       matches, except ``present_match ==
                                       invert_match`` (or when missing counts as
                                       empty); a present one matches the kind's
                                       rule, inverted by ``invert_match``
weighted clusters: each draw lands     the cluster whose cumulative weight range    150
in the range holding it                holds the drawn point (Envoy, grpc-go)
weighted clusters: shares follow       over 4,000 seeded draws each share is        40
weights; zero weights never picked     within 5 standard deviations of its weight
=====================================  ===========================================  ========
"""

from __future__ import annotations

import math
import random
import re

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxyless.resources.model import RouteAction, RouteConfiguration
from proxyless.resources.parse.common import Ctx, header_matcher
from proxyless.resources.parse.route import parse_route_configuration
from proxyless.routing import RequestInfo, VirtualHostCache, choose_cluster, select_virtual_host

from .support import examples

# -- virtual hosts -------------------------------------------------------------

_CHARS = "ab.-:"
_STEM = st.text(_CHARS, min_size=1, max_size=5)


@st.composite
def _pattern(draw: st.DrawFn) -> str:
    stem = draw(_STEM)
    return draw(st.sampled_from((stem, "*" + stem, stem + "*")))


@st.composite
def route_configs(draw: st.DrawFn) -> RouteConfiguration:
    patterns = draw(st.lists(_pattern(), min_size=1, max_size=8, unique=True))
    if draw(st.booleans()):
        patterns.insert(draw(st.integers(0, len(patterns))), "*")
    msg = route_pb2.RouteConfiguration(name="rc")
    start = 0
    while start < len(patterns):
        size = draw(st.integers(1, 3))
        vh = msg.virtual_hosts.add(name=f"vh{len(msg.virtual_hosts)}")
        vh.domains.extend(patterns[start : start + size])
        vh.routes.add(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
        start += size
    return parse_route_configuration(msg)


def oracle_virtual_host(config: RouteConfiguration, authority: str) -> str | None:
    """The rule in Envoy's ``VirtualHost.domains`` documentation, applied literally."""
    host = authority.lower()
    listed = [(vh.name, d) for vh in config.virtual_hosts for d in vh.domains]
    for name, domain in listed:
        if domain == host:
            return name
    best: tuple[int, str] | None = None  # (pattern length, vhost) among suffix wildcards
    for name, domain in listed:
        if domain != "*" and domain.startswith("*"):
            rest = domain[1:]
            if host.endswith(rest) and len(host) > len(rest):
                if best is None or len(domain) > best[0]:
                    best = (len(domain), name)
    if best is not None:
        return best[1]
    for name, domain in listed:
        if domain != "*" and domain.endswith("*"):
            rest = domain[:-1]
            if host.startswith(rest) and len(host) > len(rest):
                if best is None or len(domain) > best[0]:
                    best = (len(domain), name)
    if best is not None:
        return best[1]
    for name, domain in listed:
        if domain == "*":
            return name
    return None


@settings(max_examples=examples(300))
@given(
    config=route_configs(),
    authorities=st.lists(st.text(_CHARS + "AB", max_size=7), min_size=1, max_size=8),
)
def test_virtual_host_precedence(config: RouteConfiguration, authorities: list[str]) -> None:
    cache = VirtualHostCache(config, max_entries=4)
    for authority in authorities:
        expected = oracle_virtual_host(config, authority)
        chosen = select_virtual_host(config, authority)
        cached = cache.select(authority)
        assert (chosen.name if chosen else None) == expected, authority
        assert (cached.name if cached else None) == expected, authority


# -- header matchers -----------------------------------------------------------

_VALUES = st.one_of(st.text("ab-1+ ", max_size=5), st.integers(-20, 20).map(str))


@st.composite
def header_matchers(draw: st.DrawFn) -> rc.HeaderMatcher:
    m = rc.HeaderMatcher(
        name="x-h",
        invert_match=draw(st.booleans()),
        treat_missing_header_as_empty=draw(st.booleans()),
    )
    kind = draw(
        st.sampled_from(
            ("exact", "prefix", "suffix", "contains", "regex", "range", "present", "string", "none")
        )
    )
    value = draw(st.text("ab-1", min_size=1, max_size=3))
    if kind in ("exact", "prefix", "suffix", "contains"):
        setattr(m, f"{kind}_match", value)
    elif kind == "regex":
        m.safe_regex_match.regex = draw(st.sampled_from(("a+", "[ab]*", "-?1")))
    elif kind == "range":
        m.range_match.start = draw(st.integers(-10, 10))
        m.range_match.end = m.range_match.start + draw(st.integers(0, 10))
    elif kind == "present":
        m.present_match = draw(st.booleans())
    elif kind == "string":
        m.string_match.CopyFrom(
            string_pb2.StringMatcher(prefix=value, ignore_case=draw(st.booleans()))
        )
    return m


def oracle_header(msg: rc.HeaderMatcher, value: str | None) -> bool:
    """gRFC A28/A41 and Envoy ``HeaderMatcher``, from their text."""
    which = msg.WhichOneof("header_match_specifier")
    if value is None:
        if not msg.treat_missing_header_as_empty:
            # No rule at all is a presence check (Envoy: present_match true).
            present = msg.present_match if which == "present_match" else which is None
            return which in ("present_match", None) and present == msg.invert_match
        value = ""
    if which is None:
        matched = True  # no rule: the header is present
    elif which == "exact_match":
        matched = value == msg.exact_match
    elif which == "prefix_match":
        matched = value.startswith(msg.prefix_match)
    elif which == "suffix_match":
        matched = value.endswith(msg.suffix_match)
    elif which == "contains_match":
        matched = msg.contains_match in value
    elif which == "safe_regex_match":
        matched = re.fullmatch(msg.safe_regex_match.regex, value) is not None
    elif which == "range_match":
        matched = (
            re.fullmatch(r"\s*[+-]?[0-9]+\s*", value) is not None
            and msg.range_match.start <= int(value) < msg.range_match.end
        )
    elif which == "present_match":
        matched = msg.present_match
    else:
        expected = msg.string_match.prefix
        if msg.string_match.ignore_case:
            matched = value.lower().startswith(expected.lower())
        else:
            matched = value.startswith(expected)
    return matched != msg.invert_match


@settings(max_examples=examples(400))
@given(msg=header_matchers(), value=st.one_of(st.none(), _VALUES))
def test_header_matcher(msg: rc.HeaderMatcher, value: str | None) -> None:
    ctx = Ctx()
    matcher = header_matcher(ctx, "headers[0]", msg)
    assert matcher is not None and not ctx.errors, ctx.errors
    assert matcher.matches(value) == oracle_header(msg, value), (msg, value)


# -- weighted clusters ---------------------------------------------------------

_WEIGHTS = st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(any)


def weighted_action(weights: list[int]) -> RouteAction:
    msg = route_pb2.RouteConfiguration(name="rc")
    vh = msg.virtual_hosts.add(name="vh", domains=["*"])
    route = vh.routes.add(match=rc.RouteMatch(prefix="/"))
    for i, weight in enumerate(weights):
        entry = route.route.weighted_clusters.clusters.add(name=f"c{i}")
        entry.weight.value = weight
    action = parse_route_configuration(msg).virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    return action


class _Point(random.Random):
    """An RNG whose ``randrange`` answers a chosen point."""

    def __init__(self, point: int) -> None:
        super().__init__(0)
        self.point = point

    def randrange(self, stop: int, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        assert 0 <= self.point < stop
        return self.point


_REQUEST = RequestInfo(authority="svc", path="/a")


@settings(max_examples=examples(150))
@given(weights=_WEIGHTS, data=st.data())
def test_weighted_pick_lands_in_its_range(weights: list[int], data: st.DataObject) -> None:
    action = weighted_action(weights)
    total = sum(weights)
    point = data.draw(st.integers(0, total - 1))
    name, entry = choose_cluster(action, _REQUEST, _Point(point))
    bounds = [sum(weights[: i + 1]) for i in range(len(weights))]
    expected = next(i for i, upper in enumerate(bounds) if point < upper)
    assert name == f"c{expected}"  # zero weights have empty ranges, never hold a point
    assert entry is not None and entry.weight == weights[int(entry.name[1:])] > 0


@settings(max_examples=examples(40))
@given(weights=_WEIGHTS, seed=st.integers(0, 2**32 - 1))
def test_weighted_shares_follow_weights(weights: list[int], seed: int) -> None:
    assume(sum(weights) > 0)
    action = weighted_action(weights)
    rng = random.Random(seed)
    draws = 4000
    counts = [0] * len(weights)
    for _ in range(draws):
        name, _ = choose_cluster(action, _REQUEST, rng)
        assert name is not None
        counts[int(name[1:])] += 1
    total = sum(weights)
    for weight, count in zip(weights, counts, strict=True):
        if weight == 0:
            assert count == 0
            continue
        p = weight / total
        bound = 5 * math.sqrt(p * (1 - p) / draws) + 1 / draws
        assert abs(count / draws - p) <= bound, (weights, counts)
