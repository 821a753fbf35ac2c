"""Small pure pieces: target parsing, reconnect backoff, the fake clock, metadata headers."""

from __future__ import annotations

import random

import pytest

from proxyless.bootstrap import load_bootstrap
from proxyless.errors import BootstrapError, InvalidTarget
from proxyless.grpc._invocation import metadata_headers
from proxyless.target import parse_target
from proxyless.testing import FakeClock
from proxyless.xds_client.backoff import Backoff

_BOOT = load_bootstrap(
    {
        "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "insecure"}]}],
        "client_default_listener_resource_name_template": "lds/%s",
        "authorities": {
            "mesh.example": {
                "client_listener_resource_name_template": "xdstp://mesh.example/envoy.config.listener.v3.Listener/%s"
            }
        },
    }
)


@pytest.mark.parametrize(
    "target, authority, name, listener",
    [
        pytest.param("xds:///reviews:9080", None, "reviews:9080", "lds/reviews:9080", id="default"),
        pytest.param(
            "xds:///reviews.default.svc.cluster.local:9080",
            None,
            "reviews.default.svc.cluster.local:9080",
            "lds/reviews.default.svc.cluster.local:9080",
            id="istio-name",
        ),
        pytest.param(
            "xds://mesh.example/svc",
            "mesh.example",
            "svc",
            "xdstp://mesh.example/envoy.config.listener.v3.Listener/svc",
            id="federation",
        ),
        pytest.param("xds:///a%20b", None, "a b", None, id="percent-decoded"),
    ],
)
def test_parse_target(target, authority, name, listener):
    if " " in name:
        with pytest.raises(InvalidTarget, match="white space"):
            parse_target(target)
        return
    t = parse_target(target)
    assert (t.authority, t.name) == (authority, name)
    assert t.listener_name(_BOOT) == listener


@pytest.mark.parametrize(
    "target, needle",
    [
        pytest.param("reviews:9080", "not an xDS target", id="no-scheme"),
        pytest.param("dns:///reviews:9080", "not an xDS target", id="other-scheme"),
        pytest.param(
            "xds://reviews:9080", "did you mean 'xds:///reviews:9080'", id="missing-slash"
        ),
        pytest.param("xds:///", "names no service", id="empty-name"),
        pytest.param(42, "must be a string", id="not-a-string"),
    ],
)
def test_parse_target_errors(target, needle):
    with pytest.raises(InvalidTarget, match=needle):
        parse_target(target)


def test_unknown_authority_is_a_bootstrap_error():
    with pytest.raises(BootstrapError, match=r"other\.example"):
        parse_target("xds://other.example/svc").listener_name(_BOOT)


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(rng=random.Random(7))
    delays = [b.next_delay() for _ in range(14)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 * 0.8 <= delays[1] <= 1.6 * 1.2
    assert all(d <= 120 * 1.2 for d in delays)
    assert delays[-1] >= 120 * 0.8  # reached the cap
    b.reset()
    assert 0.8 <= b.next_delay() <= 1.2


def test_backoff_without_jitter_is_initial_times_multiplier_powers_capped():
    b = Backoff(jitter=0.0, rng=random.Random(0))
    delays = [b.next_delay() for _ in range(13)]
    expected = [min(1.6**n, 120.0) for n in range(13)]
    assert delays == pytest.approx(expected)
    assert delays[-1] == 120.0
    b.reset()
    assert b.next_delay() == 1.0


def test_fake_clock_fires_due_timers_in_order():
    clock = FakeClock(start=0.0)
    fired: list[str] = []
    clock.call_later(2, lambda: fired.append("b"))
    clock.call_later(1, lambda: fired.append("a"))
    cancelled = clock.call_later(1.5, lambda: fired.append("x"))
    cancelled.cancel()
    clock.advance(1.0)
    assert fired == ["a"] and clock.monotonic() == 1.0
    clock.advance(5.0)
    assert fired == ["a", "b"] and clock.pending() == 0
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.parametrize(
    "metadata, expected",
    [
        pytest.param(None, {}, id="none"),
        pytest.param([("X-User", "a")], {"x-user": "a"}, id="lower-cased"),
        pytest.param([("x", "1"), ("x", "2")], {"x": "1,2"}, id="joined"),
        pytest.param([("trace-bin", b"\x00"), ("y", "z")], {"y": "z"}, id="bin-dropped"),
    ],
)
def test_metadata_headers(metadata, expected):
    assert metadata_headers(metadata) == expected


def test_public_names_are_importable():
    # (the order of __all__ is checked by ruff's RUF022; ``proxyless`` loads
    # some of its names lazily, which only importing them can check)
    import proxyless
    import proxyless.errors
    import proxyless.grpc
    import proxyless.xds_client

    for module in (proxyless, proxyless.errors, proxyless.grpc, proxyless.xds_client):
        for name in module.__all__:
            assert getattr(module, name) is not None
