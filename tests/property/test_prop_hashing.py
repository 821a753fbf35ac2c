"""Properties of request hashing, rewrites and timeouts (``proxyless.routing``).

These functions read caller-controlled text (headers, cookies, query
strings, paths) on every request.

====================================  ============================================  ========
property                              why (the rule)                                examples
====================================  ============================================  ========
request hash: any header, cookie or   a request never fails inside routing;         200
query text, same request same hash    consistent hashing needs a stable hash
a terminal policy that yields a hash  Envoy ``HashPolicyImpl``: evaluation stops    100
ends evaluation
``cookie_value``: the first pair      Envoy ``parseCookieValue``: ``;``-separated    150
with the name, one pair of quotes     pairs, blanks around them ignored
removed
``regex_rewrite`` with ``\\0`` is the   ``RE2::GlobalReplace`` puts every match back   150
identity; a pattern that never        where it was; no match, no change
matches changes nothing
gRPC deadline: never later than the   gRFC A31; the request path's ``apply_cap``    150
caller's or the cap; both halves      and ``grpc_cap`` give ``grpc_deadline``'s
agree                                 value
====================================  ============================================  ========
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.resources.model import HashPolicy, RegexRewrite, RouteAction
from proxyless.resources.parse.regex import compile_re2
from proxyless.routing import (
    RequestInfo,
    apply_cap,
    cookie_value,
    grpc_cap,
    grpc_deadline,
    request_hash,
)

from .support import examples

# Header values may hold anything a caller can put in a str, lone surrogates too.
_ANY_TEXT = st.lists(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=12
).map("".join)
_NAMES = st.sampled_from(("x-user", "cookie", "content-type", ":path", "x-id-bin", "session"))


@st.composite
def hash_policies(draw: st.DrawFn) -> HashPolicy:
    kind = draw(
        st.sampled_from(
            ("header", "cookie", "query_parameter", "connection_properties", "filter_state")
        )
    )
    rewrite = None
    if kind == "header" and draw(st.booleans()):
        pattern = compile_re2(draw(st.sampled_from(("[0-9]+", "^(.)", "x*", "é"))))
        rewrite = RegexRewrite(
            pattern=pattern, substitution=draw(st.sampled_from(("", "\\0", "#")))
        )
    return HashPolicy(
        kind=kind,  # type: ignore[arg-type]
        name=draw(
            st.sampled_from(("x-user", "session", "io.grpc.channel_id", ":path", "x-id-bin"))
        ),
        terminal=draw(st.booleans()),
        regex_rewrite=rewrite,
        source_ip=draw(st.booleans()),
    )


@st.composite
def requests(draw: st.DrawFn) -> RequestInfo:
    return RequestInfo(
        authority="svc",
        path=draw(st.sampled_from(("/", "/a.A/Get", "/p"))),
        query=draw(_ANY_TEXT),
        headers=draw(st.dictionaries(_NAMES, _ANY_TEXT, max_size=4)),
        is_grpc=draw(st.booleans()),
        source_ip=draw(st.sampled_from(("", "10.0.0.1", "::1"))),
    )


@settings(max_examples=examples(200))
@given(
    policies=st.lists(hash_policies(), max_size=4),
    request=requests(),
    channel=st.integers(0, 2**64 - 1),
)
def test_request_hash_is_stable(
    policies: list[HashPolicy], request: RequestInfo, channel: int
) -> None:
    first = request_hash(policies, request, channel_id=channel, rng=random.Random(1))
    second = request_hash(policies, request, channel_id=channel, rng=random.Random(2))
    assert 0 <= first < 2**64
    fallback_1 = random.Random(1).getrandbits(64)
    fallback_2 = random.Random(2).getrandbits(64)
    if (first, second) != (fallback_1, fallback_2):  # some policy yielded a value
        assert first == second


@settings(max_examples=examples(100))
@given(
    rest=st.lists(hash_policies(), max_size=3),
    request=requests(),
    channel=st.integers(0, 2**64 - 1),
)
def test_terminal_policy_ends_evaluation(
    rest: list[HashPolicy], request: RequestInfo, channel: int
) -> None:
    terminal = HashPolicy(kind="filter_state", name="io.grpc.channel_id", terminal=True)
    rng = random.Random(0)
    assert request_hash([terminal, *rest], request, channel_id=channel, rng=rng) == channel


_COOKIE_NAME = st.text("abcXYZ_-", min_size=1, max_size=4)
_COOKIE_VALUE = st.text('abc"=1 ', max_size=5)


@settings(max_examples=examples(150))
@given(
    pairs=st.lists(st.tuples(_COOKIE_NAME, _COOKIE_VALUE), max_size=5),
    name=_COOKIE_NAME,
    blanks=st.sampled_from(("", " ", "  ")),
)
def test_cookie_value(pairs: list[tuple[str, str]], name: str, blanks: str) -> None:
    header = ";".join(f"{blanks}{k}={v}{blanks}" for k, v in pairs)
    expected = None
    for key, value in pairs:
        if key == name:
            # The pair is stripped, not the value: "k= v" holds " v".
            value = f"{key}={value}{blanks}".strip().partition("=")[2]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            expected = value
            break
    assert cookie_value(header, name) == expected


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)


@settings(max_examples=examples(150))
@given(
    pattern=st.sampled_from(("a", "a*", "[0-9]+", "", "(x)(y)?", ".", "é|b", "\\b", "$")),
    value=_TEXT,
)
def test_rewrite_with_whole_match_is_identity(pattern: str, value: str) -> None:
    regex = compile_re2(pattern)
    assert RegexRewrite(pattern=regex, substitution="\\0").apply(value) == value
    never = compile_re2("[^\\x00-\\x{10FFFF}]")
    assert RegexRewrite(pattern=never, substitution="x").apply(value) == value


_SECONDS = st.one_of(st.none(), st.just(0.0), st.floats(0.001, 1e6))


@settings(max_examples=examples(150))
@given(
    header_max=_SECONDS,
    route_max=_SECONDS,
    listener_max=_SECONDS,
    caller=st.one_of(st.none(), st.floats(0.001, 1e6)),
)
def test_grpc_deadline(
    header_max: float | None,
    route_max: float | None,
    listener_max: float | None,
    caller: float | None,
) -> None:
    action = RouteAction(
        cluster="c", grpc_timeout_header_max=header_max, max_stream_duration=route_max
    )
    value, source = grpc_deadline(action, listener_max, caller)
    assert source
    assert value == apply_cap(caller, grpc_cap(action, listener_max))
    if caller is not None:
        assert value is not None and value <= caller
    cap = grpc_cap(action, listener_max)
    if cap is not None:
        assert value is not None and value <= cap
