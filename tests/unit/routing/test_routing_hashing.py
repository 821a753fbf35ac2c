"""Request hashing for ring_hash / maglev (gRFC A42, Envoy hash policies)."""

from __future__ import annotations

import logging
import random

import pytest
import xxhash

from proxyless.resources.model import HashPolicy, RegexRewrite
from proxyless.resources.parse.regex import compile_re2
from proxyless.routing import RequestInfo, cookie_value, request_hash

MASK = (1 << 64) - 1


def h(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode(), 0)


def rotl(x: int) -> int:
    return ((x << 1) | (x >> 63)) & MASK


GRPC = RequestInfo(
    "svc",
    "/pkg.S/M",
    headers={"x-user": "alice", "x-session-bin": "AAA", "x-team": "core"},
    is_grpc=True,
    source_ip="10.0.0.7",
)
HTTP = RequestInfo(
    "web",
    "/items",
    query="id=42&id=43&page=2",
    method="GET",
    headers={"x-user": "alice", "cookie": 'a=1; session="s-9"; b=2'},
    is_grpc=False,
    source_ip="10.0.0.8",
)

CASES = [
    pytest.param([HashPolicy("header", "x-user")], GRPC, h("alice"), id="header"),
    pytest.param(
        [
            HashPolicy(
                "header",
                "x-user",
                regex_rewrite=RegexRewrite(compile_re2("^(a)lice$"), r"\1nyone"),
            )
        ],
        GRPC,
        h("anyone"),
        id="header-regex-rewrite",
    ),
    pytest.param([HashPolicy("header", "x-session-bin")], GRPC, None, id="grpc-bin-ignored"),
    pytest.param(
        [HashPolicy("header", "content-type")], GRPC, h("application/grpc"), id="grpc-content-type"
    ),
    pytest.param([HashPolicy("header", ":path")], GRPC, None, id="grpc-no-pseudo"),
    pytest.param(
        [HashPolicy("header", ":path")], HTTP, h("/items?id=42&id=43&page=2"), id="http-path"
    ),
    pytest.param([HashPolicy("filter_state", "io.grpc.channel_id")], GRPC, 12345, id="channel-id"),
    pytest.param([HashPolicy("filter_state", "other.key")], GRPC, None, id="other-filter-state"),
    pytest.param(
        [HashPolicy("connection_properties", source_ip=True)], GRPC, h("10.0.0.7"), id="source-ip"
    ),
    pytest.param(
        [HashPolicy("connection_properties", source_ip=False)], GRPC, None, id="conn-no-source-ip"
    ),
    pytest.param([HashPolicy("cookie", "session")], HTTP, h("s-9"), id="cookie-quoted"),
    pytest.param([HashPolicy("cookie", "none")], HTTP, None, id="cookie-missing"),
    pytest.param([HashPolicy("cookie", "session")], GRPC, None, id="cookie-grpc"),
    pytest.param([HashPolicy("query_parameter", "id")], HTTP, h("42"), id="query-first-value"),
    pytest.param([HashPolicy("query_parameter", "id")], GRPC, None, id="query-grpc"),
    pytest.param(
        [HashPolicy("header", "x-user"), HashPolicy("header", "x-team")],
        GRPC,
        rotl(h("alice")) ^ h("core"),
        id="combine-rotl-xor",
    ),
    pytest.param(
        [HashPolicy("header", "x-user", terminal=True), HashPolicy("header", "x-team")],
        GRPC,
        h("alice"),
        id="terminal-stops",
    ),
    pytest.param(
        [HashPolicy("header", "missing", terminal=True), HashPolicy("header", "x-team")],
        GRPC,
        h("core"),
        id="terminal-without-hash-continues",
    ),
    pytest.param(
        [
            HashPolicy("header", "x-user"),
            HashPolicy("header", "missing", terminal=True),
            HashPolicy("header", "x-team"),
        ],
        GRPC,
        h("alice"),
        id="terminal-with-earlier-hash-stops",
    ),
]


@pytest.mark.parametrize(("policies", "request_info", "expected"), CASES)
def test_request_hash(
    policies: list[HashPolicy], request_info: RequestInfo, expected: int | None
) -> None:
    rng = random.Random(99)
    got = request_hash(policies, request_info, channel_id=12345, rng=rng)
    if expected is None:
        assert got == random.Random(99).getrandbits(64)
    else:
        assert got == expected


def test_no_hash_is_random_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(3)
    with caplog.at_level(logging.DEBUG, logger="proxyless.routing"):
        a = request_hash([HashPolicy("header", "nope")], GRPC, channel_id=1, rng=rng)
        b = request_hash([HashPolicy("header", "nope")], GRPC, channel_id=1, rng=rng)
    assert a != b
    assert 0 <= a <= MASK
    assert "no hash policy matched" in caplog.text


def test_channel_id_masked_to_64_bits() -> None:
    got = request_hash(
        [HashPolicy("filter_state", "io.grpc.channel_id")],
        GRPC,
        channel_id=(1 << 70) + 5,
        rng=random.Random(0),
    )
    assert got == 5


@pytest.mark.parametrize(
    ("header", "name", "value"),
    [
        pytest.param("a=1; b=2", "b", "2", id="second"),
        pytest.param("a=1;b=2", "b", "2", id="no-space"),
        pytest.param('a="x"', "a", "x", id="quoted"),
        pytest.param("a=1; a=2", "a", "1", id="first-wins"),
        pytest.param("a; b=2", "a", None, id="no-equals"),
        pytest.param("ab=1", "a", None, id="prefix-name"),
    ],
)
def test_cookie_value(header: str, name: str, value: str | None) -> None:
    assert cookie_value(header, name) == value


def test_header_with_a_lone_surrogate_hashes() -> None:
    # Found by tests/property: a lone surrogate in a hashed header (gRPC
    # metadata can hold one) raised UnicodeEncodeError out of request_hash.
    policy = HashPolicy(kind="header", name="x-user")
    request = RequestInfo(authority="svc", path="/", headers={"x-user": "\ud800"})
    value = request_hash([policy], request, channel_id=0, rng=random.Random(0))
    assert value == xxhash.xxh64_intdigest(b"\xed\xa0\x80", 0)
