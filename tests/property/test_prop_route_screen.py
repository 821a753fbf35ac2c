"""Validating plain virtual hosts ahead (``proxyless.resources.parse.route_bulk``
all at once, ``route_screen`` one by one) gives what the general parser gives.

For every RouteConfiguration drawn, ``decode_route_configuration`` with the
screen and without it agree: the same errors (NACK or not, same field paths),
the same ``ignored_fields``, and models that compare equal (which builds every
lazily built route). The drawn virtual hosts are near the edge of "plain":
plain ones, plain ones with one bad value (an empty, duplicate or malformed
domain, an empty cluster, an out-of-range duration, an invalid retry policy,
no path specifier), and ones with one field that is not plain, at every
level. The general strategies of ``protos`` (valid and perturbed route
configurations) run through the same check. Configurations whose virtual
hosts are all plain take the all-at-once way (checked), and hand-made wire
bytes try to fool its counting: a field moved from one route to another
(one route with two, one with none) or split in two.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.resources.model.route import LazyRoutes
from proxyless.resources.parse.route import decode_route_configuration
from proxyless.resources.parse.route_bulk import screen_configuration
from proxyless.resources.parse.route_screen import virtual_host_bytes

from . import protos
from .support import examples

_VALID_DOMAINS = ["svc.ns", "svc.ns:8080", "*.ns", "svc-*", "*", "x.y", "Mixed.Case"]
_GOOD_DURATIONS = [(0, 0), (1, 500), (15, 0)]
_BAD_DURATIONS = [(-1, 0), (0, -5), (1, 1_000_000_000), (315_576_000_001, 0)]

#: One deviation from "plain" per virtual host (or none): a value the
#: general parser reports, or a field it does not treat as plain.
ROUTE_TWISTS = [
    "no_match",
    "empty_match",
    "regex",
    "bad_regex",
    "header",
    "grpc",
    "fraction",
    "weighted",
    "weighted_zero",
    "redirect",
    "no_action",
    "no_specifier",
    "empty_cluster",
    "bad_timeout",
    "bad_idle",
    "bad_msd",
    "bad_header_max",
    "msd_offset",
    "retry_zero",
    "retry_unhandled",
    "retry_bad_backoff",
    "prefix_rewrite",
    "hash",
    "not_found",
    "bad_not_found",
    "decorator",
    "headers",
    "filters",
    "empty_timeout",
]
VHOST_TWISTS = [
    "no_domains",
    "empty_domain",
    "dup_domain",
    "space_domain",
    "slash_domain",
    "vh_retry",
    "vh_hedge",
    "vh_headers",
    "matcher",
    "rate_limits",
]


def _set_duration(target: duration_pb2.Duration, value: tuple[int, int]) -> None:
    target.seconds, target.nanos = value


@st.composite
def _route(draw: st.DrawFn, twist: str | None) -> rc.Route:
    """A plain route with random plain values, deviated by ``twist``."""
    r = rc.Route(name=draw(st.sampled_from(["", "default", "r1"])))
    if twist == "empty_match":
        r.match.SetInParent()  # no path specifier
    elif twist != "no_match":
        r.match.SetInParent()
        if draw(st.booleans()):
            r.match.prefix = draw(st.sampled_from(["", "/", "/api"]))
        else:
            r.match.path = "/svc.S/M"
        if draw(st.booleans()):
            r.match.case_sensitive.value = draw(st.booleans())
    if twist in ("regex", "bad_regex"):
        r.match.safe_regex.regex = "/a.*" if twist == "regex" else "(a"
    elif twist == "header":
        r.match.headers.add(name="x-a", exact_match="1")
    elif twist == "grpc":
        r.match.grpc.SetInParent()
    elif twist == "fraction":
        r.match.runtime_fraction.default_value.numerator = 50
    if twist in ("weighted", "weighted_zero"):
        cw = r.route.weighted_clusters.clusters.add(name="c1")
        cw.weight.value = 3 if twist == "weighted" else 0
    elif twist == "redirect":
        r.redirect.path_redirect = "/x"
    elif twist == "no_action":
        pass
    elif twist == "no_specifier":
        r.route.SetInParent()  # skipped and reported
    else:
        r.route.cluster = (
            "" if twist == "empty_cluster" else draw(st.sampled_from(["c1", "o|80||s"]))
        )
    if twist in ("weighted", "weighted_zero", "redirect", "no_action"):
        return r
    a = r.route
    if draw(st.booleans()) or twist == "bad_timeout":
        bad = twist == "bad_timeout"
        _set_duration(a.timeout, draw(st.sampled_from(_BAD_DURATIONS if bad else _GOOD_DURATIONS)))
    if twist == "empty_timeout":
        a.timeout.SetInParent()
    if draw(st.booleans()) or twist == "bad_idle":
        bad = twist == "bad_idle"
        _set_duration(
            a.idle_timeout, draw(st.sampled_from(_BAD_DURATIONS if bad else _GOOD_DURATIONS))
        )
    if draw(st.booleans()) or twist in ("bad_msd", "bad_header_max", "msd_offset"):
        msd = a.max_stream_duration
        msd.SetInParent()
        if draw(st.booleans()) or twist == "bad_msd":
            bad = twist == "bad_msd"
            _set_duration(
                msd.max_stream_duration,
                draw(st.sampled_from(_BAD_DURATIONS if bad else _GOOD_DURATIONS)),
            )
        if draw(st.booleans()) or twist == "bad_header_max":
            bad = twist == "bad_header_max"
            _set_duration(
                msd.grpc_timeout_header_max,
                draw(st.sampled_from(_BAD_DURATIONS if bad else _GOOD_DURATIONS)),
            )
        if twist == "msd_offset":
            msd.grpc_timeout_header_offset.seconds = 1
    if draw(st.booleans()) or (twist and twist.startswith("retry")):
        rp = a.retry_policy
        rp.retry_on = draw(st.sampled_from(["5xx,unavailable", "cancelled", ""]))
        rp.num_retries.value = 0 if twist == "retry_zero" else draw(st.sampled_from([1, 2]))
        if twist == "retry_unhandled":
            rp.retry_priority.name = "envoy.retry_priorities.previous_priorities"
        if twist == "retry_bad_backoff":
            _set_duration(rp.retry_back_off.base_interval, draw(st.sampled_from(_BAD_DURATIONS)))
    if twist == "prefix_rewrite":
        a.prefix_rewrite = "/v2"
    elif twist == "hash":
        a.hash_policy.add().header.header_name = "x-user"
    elif twist in ("not_found", "bad_not_found"):
        a.cluster_not_found_response_code = 1 if twist == "not_found" else 7  # type: ignore[assignment]
    elif twist == "decorator":
        r.decorator.operation = "op"  # not acted on: ignored
    elif twist == "headers":
        r.request_headers_to_remove.append("x-b")
    elif twist == "filters":
        r.typed_per_filter_config["envoy.filters.http.fault"].type_url = "type.googleapis.com/x"
    return r


@st.composite
def _virtual_host(draw: st.DrawFn, index: int, twist: str | None = None) -> rc.VirtualHost:
    """A plain virtual host, or one with a single deviation (``twist``, else
    drawn; ``"plain"``: none) somewhere."""
    vh = rc.VirtualHost(name=draw(st.sampled_from(["", "vh", "outbound|80||svc"])))
    domains = draw(st.lists(st.sampled_from(_VALID_DOMAINS), min_size=1, max_size=3, unique=True))
    vh.domains.extend(f"{d}.{index}" for d in domains)  # unique across virtual hosts
    count = draw(st.integers(0 if twist is None else 1, 3))
    if twist is None:
        twist = draw(st.sampled_from([None, None, *ROUTE_TWISTS, *VHOST_TWISTS]))
    at = draw(st.integers(0, max(0, count - 1)))
    route_twist = twist if twist in ROUTE_TWISTS else None
    vh.routes.extend(draw(_route(route_twist if i == at else None)) for i in range(count))
    vh.include_request_attempt_count = draw(st.booleans())
    vh.include_attempt_count_in_response = draw(st.booleans())
    if twist == "no_domains":
        del vh.domains[:]
    elif twist == "empty_domain":
        vh.domains.append("")
    elif twist == "dup_domain":
        vh.domains.append(vh.domains[0].upper())
    elif twist == "space_domain":
        vh.domains.append("a b")
    elif twist == "slash_domain":
        vh.domains.append("a/b")
    elif twist == "vh_retry":
        vh.retry_policy.retry_on = "5xx"
    elif twist == "vh_hedge":
        vh.hedge_policy.initial_requests.value = 2
    elif twist == "vh_headers":
        vh.response_headers_to_remove.append("x-c")
    elif twist == "matcher":
        vh.matcher.SetInParent()
    elif twist == "rate_limits":
        vh.rate_limits.add().stage.value = 1  # not acted on: ignored
    return vh


@st.composite
def _configuration(draw: st.DrawFn, twist: str | None = None) -> route_pb2.RouteConfiguration:
    """Virtual hosts plain or deviated; with ``twist``, one of them has it."""
    cfg = route_pb2.RouteConfiguration(name=draw(st.sampled_from(["rc", ""])))
    count = draw(st.integers(1, 4))
    at = draw(st.integers(0, count - 1))
    cfg.virtual_hosts.extend(
        draw(_virtual_host(i, twist if i == at else None)) for i in range(count)
    )
    if draw(st.integers(0, 5)) == 0:
        cfg.internal_only_headers.append("x-internal")
    if draw(st.integers(0, 5)) == 0:
        first = cfg.virtual_hosts[0].domains
        cfg.virtual_hosts.add(name="dup", domains=[first[0] if first else "d"])
    return cfg


def _same(data: bytes) -> None:
    screened = decode_route_configuration(data)
    general = decode_route_configuration(data, screen=False)
    assert screened.name == general.name
    assert screened.errors == general.errors
    if general.value is None:
        assert screened.value is None
        return
    value: Any = screened.value
    assert value.ignored_fields == general.value.ignored_fields
    assert value == general.value
    for vh, expected in zip(value.virtual_hosts, general.value.virtual_hosts, strict=True):
        assert tuple(vh.routes) == expected.routes  # built lazily, then equal route by route
        if isinstance(vh.routes, LazyRoutes):
            assert vh.routes.built
            assert list(vh.routes.clusters) == [r.action.cluster for r in vh.routes]


@settings(max_examples=examples(200), deadline=None)
@given(_configuration())
def test_screened_and_general_parse_agree(cfg: route_pb2.RouteConfiguration) -> None:
    _same(cfg.SerializeToString())


@pytest.mark.parametrize("twist", ROUTE_TWISTS + VHOST_TWISTS)
def test_agree_with_each_deviation(twist: str) -> None:
    """Each deviation from "plain", in a virtual host otherwise plain."""

    @settings(max_examples=examples(12), deadline=None)
    @given(_configuration(twist))
    def check(cfg: route_pb2.RouteConfiguration) -> None:
        _same(cfg.SerializeToString())

    check()


@settings(max_examples=examples(40), deadline=None)
@given(protos.valid_route_configuration())
def test_agree_on_valid_configurations(cfg: route_pb2.RouteConfiguration) -> None:
    _same(cfg.SerializeToString())


@settings(max_examples=examples(60), deadline=None)
@given(protos.perturbed(protos.valid_route_configuration()))
def test_agree_on_perturbed_configurations(cfg: route_pb2.RouteConfiguration) -> None:
    _same(cfg.SerializeToString())


@settings(max_examples=examples(60), deadline=None)
@given(_configuration(), st.binary(min_size=1, max_size=6))
def test_agree_on_non_canonical_bytes(cfg: route_pb2.RouteConfiguration, pad: bytes) -> None:
    """Bytes a canonical encoder would not write (a field repeated, so the
    last one wins; an unknown field) must not fool the size comparison."""
    data = cfg.SerializeToString()
    name = cfg.name.encode()
    again = bytes([0x0A, len(name)]) + name  # field 1 (name) once more
    unknown = bytes([0xF8, 0x07]) + bytes([len(pad) % 100])  # field 127, varint
    _same(data + again)
    _same(data + unknown)


def _bulk_screens(data: bytes) -> bool:
    msg = route_pb2.RouteConfiguration.FromString(data)
    sources = virtual_host_bytes(data) or []
    if msg.ByteSize() != len(data):  # the caller's check: canonical bytes
        return False
    hosts = screen_configuration(data, msg.virtual_hosts, sources, lambda s: (), {}, {})
    return hosts is not None


@st.composite
def _plain_configuration(draw: st.DrawFn) -> route_pb2.RouteConfiguration:
    """Every virtual host plain and clean, each with at least one route."""
    cfg = route_pb2.RouteConfiguration(name="plain")
    cfg.virtual_hosts.extend(
        draw(_virtual_host(i, "plain")) for i in range(draw(st.integers(1, 4)))
    )
    return cfg


@settings(max_examples=examples(60), deadline=None)
@given(_plain_configuration())
def test_all_plain_configurations_are_validated_at_once(cfg: route_pb2.RouteConfiguration) -> None:
    data = cfg.SerializeToString()
    general = decode_route_configuration(data, screen=False)
    if general.value is not None and not general.value.ignored_fields:
        assert _bulk_screens(data)  # clean: nothing for the general way to say
    else:
        assert not _bulk_screens(data)
    _same(data)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field, as the wire has it."""
    size = len(payload)
    head = bytearray([number << 3 | 2])
    while True:
        byte, size = size & 0x7F, size >> 7
        head.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(head) + payload


def _wire_configuration(cfg: route_pb2.RouteConfiguration, routes: list[list[bytes]]) -> bytes:
    """``cfg`` with the routes of each virtual host replaced by raw bytes."""
    out = bytearray(route_pb2.RouteConfiguration(name=cfg.name).SerializeToString())
    for vh, raw_routes in zip(cfg.virtual_hosts, routes, strict=True):
        bare = rc.VirtualHost()
        bare.CopyFrom(vh)
        del bare.routes[:]
        body = bare.SerializeToString() + b"".join(_field(3, r) for r in raw_routes)
        out += _field(2, body)
    return bytes(out)


#: Ways to move or split one field between two routes A and B.
_SMUGGLES = ["match", "action", "path", "cluster", "retry_split", "timeout_split"]


@settings(max_examples=examples(40), deadline=None)
@given(_plain_configuration(), st.sampled_from(_SMUGGLES), st.data())
def test_duplicated_fields_do_not_fool_the_counting(
    cfg: route_pb2.RouteConfiguration, smuggle: str, data: st.DataObject
) -> None:
    """Route A gets a second occurrence of a field, route B loses its own:
    the counts of the whole configuration still add up, but the wire is not
    canonical, so the all-at-once way declines and both agree (also when
    another virtual host is not plain, and the plain ones go as a subset)."""
    routes = [[r.SerializeToString() for r in vh.routes] for vh in cfg.virtual_hosts]
    flat = [(i, j) for i, vh in enumerate(cfg.virtual_hosts) for j in range(len(vh.routes))]
    (ai, aj) = data.draw(st.sampled_from(flat))
    a = cfg.virtual_hosts[ai].routes[aj]
    b_at = data.draw(st.sampled_from(flat))
    b = cfg.virtual_hosts[b_at[0]].routes[b_at[1]]
    stripped = rc.Route()
    stripped.CopyFrom(b)
    extra = b""
    if smuggle == "match":
        extra = _field(1, b.match.SerializeToString())
        stripped.ClearField("match")
    elif smuggle == "action":
        extra = _field(2, b.route.SerializeToString())
        stripped.ClearField("route")
    elif smuggle == "path":
        extra = _field(1, _field(1, b"/smuggled"))  # a second prefix in A's match
        stripped.match.ClearField("prefix")
        stripped.match.ClearField("path")
    elif smuggle == "cluster":
        extra = _field(2, _field(1, b"smuggled"))  # a second cluster in A's action
        stripped.route.ClearField("cluster")
    elif smuggle == "retry_split":
        # Each half is a valid policy; together the back-off's base exceeds its max.
        half1 = rc.RetryPolicy(retry_on="5xx")
        half1.retry_back_off.base_interval.seconds = 10
        half2 = rc.RetryPolicy()
        half2.retry_back_off.base_interval.seconds = 1
        half2.retry_back_off.max_interval.seconds = 2
        extra = _field(
            2, _field(9, half2.SerializeToString()) + _field(9, half1.SerializeToString())
        )
    elif smuggle == "timeout_split":
        extra = _field(2, _field(8, duration_pb2.Duration(seconds=3).SerializeToString()))
    routes[ai][aj] = a.SerializeToString() + extra
    if b_at != (ai, aj):
        routes[b_at[0]][b_at[1]] = stripped.SerializeToString()
    if data.draw(st.booleans()):
        # One virtual host that is not plain: the others go all at once as a
        # subset, each checked for canonical bytes on its own.
        odd = cfg.virtual_hosts.add(name="odd", domains=["odd.example"])
        r = odd.routes.add()
        r.match.prefix = "/"
        r.route.cluster = "odd"
        r.decorator.operation = "op"
        routes.append([r.SerializeToString()])
    _same(_wire_configuration(cfg, routes))
