"""Matcher semantics (Envoy string/header/query matchers, gRFC A28/A41) and RE2 translation."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import range_pb2

from proxyless.resources.model import HeaderMatcher, QueryParameterMatcher, StringMatcher
from proxyless.resources.parse.common import (
    Ctx,
    header_matcher,
    query_parameter_matcher,
    regex_rewrite,
    string_matcher,
)
from proxyless.resources.parse.regex import RegexError, check_substitution, compile_re2


def _re(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _sm(**kw: object) -> StringMatcher:
    ctx = Ctx()
    parsed = string_matcher(ctx, "m", string_pb2.StringMatcher(**kw))
    assert not ctx.errors, ctx.errors
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("proto", "value", "expected"),
    [
        pytest.param({"exact": "abc"}, "abc", True, id="exact-hit"),
        pytest.param({"exact": "abc"}, "ABC", False, id="exact-case"),
        pytest.param({"exact": "abc", "ignore_case": True}, "ABC", True, id="exact-ignore-case"),
        pytest.param({"exact": ""}, "", True, id="exact-empty"),
        pytest.param({"prefix": "/svc"}, "/svc/m", True, id="prefix-hit"),
        pytest.param({"prefix": "/svc"}, "/SVC/m", False, id="prefix-case"),
        pytest.param({"prefix": "/svc", "ignore_case": True}, "/SVC/m", True, id="prefix-ic"),
        pytest.param({"suffix": ".com"}, "a.com", True, id="suffix-hit"),
        pytest.param({"suffix": ".com"}, "a.org", False, id="suffix-miss"),
        pytest.param({"contains": "mid"}, "amidb", True, id="contains-hit"),
        pytest.param({"contains": "MID", "ignore_case": True}, "amidb", True, id="contains-ic"),
        pytest.param({"safe_regex": _re("a[0-9]+")}, "a12", True, id="regex-full"),
        pytest.param({"safe_regex": _re("a[0-9]+")}, "xa12", False, id="regex-not-partial"),
        pytest.param({"safe_regex": _re("a[0-9]+")}, "a12x", False, id="regex-anchored-end"),
        pytest.param({"safe_regex": _re(r"\d+")}, "١٢", False, id="regex-ascii-digits"),
        pytest.param({"safe_regex": _re("[[:alpha:]]+")}, "abZ", True, id="regex-posix-class"),
    ],
)
def test_string_matcher(proto: dict[str, object], value: str, expected: bool) -> None:
    assert _sm(**proto).matches(value) is expected


@pytest.mark.parametrize(
    ("proto", "error"),
    [
        pytest.param({"prefix": ""}, "m.prefix: must not be empty", id="empty-prefix"),
        pytest.param({}, "m: no match pattern set", id="nothing-set"),
        pytest.param(
            {"safe_regex": _re("a(")}, "m.safe_regex.regex: invalid regex 'a('", id="bad-regex"
        ),
        pytest.param(
            {"safe_regex": _re(r"(a)\1")}, "back-references are not allowed", id="backref"
        ),
        pytest.param({"safe_regex": _re("a(?=b)")}, "look-around", id="lookahead"),
        # Envoy NACKs it ("ignore_case has no effect for safe_regex"), as
        # gRPC C-core does for SAN matchers; grpc-go ignores the flag.
        pytest.param(
            {"safe_regex": _re("abc"), "ignore_case": True},
            "m.ignore_case: ignore_case has no effect for safe_regex",
            id="regex-ignore-case",
        ),
    ],
)
def test_string_matcher_errors(proto: dict[str, object], error: str) -> None:
    ctx = Ctx()
    assert string_matcher(ctx, "m", string_pb2.StringMatcher(**proto)) is None
    assert len(ctx.errors) == 1
    assert error in ctx.errors[0]


def _hm(**kw: object) -> HeaderMatcher:
    ctx = Ctx()
    parsed = header_matcher(ctx, "h", rc.HeaderMatcher(name="X-Key", **kw))
    assert not ctx.errors, ctx.errors
    assert parsed is not None
    return parsed


_RANGE = range_pb2.Int64Range(start=10, end=20)


@pytest.mark.parametrize(
    ("proto", "value", "expected"),
    [
        pytest.param({"exact_match": "v"}, "v", True, id="exact"),
        pytest.param({"exact_match": "v"}, "V", False, id="exact-case-sensitive"),
        pytest.param({"exact_match": "v"}, None, False, id="exact-absent"),
        pytest.param({"exact_match": "v", "invert_match": True}, "w", True, id="exact-inverted"),
        pytest.param({"exact_match": "v", "invert_match": True}, None, False, id="inverted-absent"),
        pytest.param({"safe_regex_match": _re("v+")}, "vvv", True, id="regex"),
        pytest.param({"safe_regex_match": _re("v+")}, "vvx", False, id="regex-full-match"),
        pytest.param({"range_match": _RANGE}, "10", True, id="range-start-inclusive"),
        pytest.param({"range_match": _RANGE}, "20", False, id="range-end-exclusive"),
        pytest.param({"range_match": _RANGE}, "+15", True, id="range-plus-sign"),
        pytest.param({"range_match": _RANGE}, "1x", False, id="range-not-integer"),
        pytest.param({"range_match": _RANGE}, None, False, id="range-absent"),
        pytest.param({"present_match": True}, "", True, id="present-true-present"),
        pytest.param({"present_match": True}, None, False, id="present-true-absent"),
        pytest.param({"present_match": False}, "x", False, id="present-false-present"),
        pytest.param({"present_match": False}, None, True, id="present-false-absent"),
        pytest.param(
            {"present_match": True, "invert_match": True}, None, True, id="present-inverted-absent"
        ),
        pytest.param(
            {"present_match": False, "invert_match": True}, None, False, id="absent-inverted-absent"
        ),
        pytest.param({}, "anything", True, id="no-specifier-is-presence"),
        pytest.param({}, None, False, id="no-specifier-absent"),
        pytest.param({"prefix_match": "ab"}, "abc", True, id="prefix"),
        pytest.param({"suffix_match": "bc"}, "abc", True, id="suffix"),
        pytest.param({"contains_match": "b"}, "abc", True, id="contains"),
        pytest.param(
            {"string_match": string_pb2.StringMatcher(exact="ABC", ignore_case=True)},
            "abc",
            True,
            id="string-match-ignore-case",
        ),
        pytest.param(
            {"exact_match": "", "treat_missing_header_as_empty": True},
            None,
            True,
            id="missing-as-empty",
        ),
        pytest.param(
            {"prefix_match": "a", "treat_missing_header_as_empty": True},
            None,
            False,
            id="missing-as-empty-no-match",
        ),
    ],
)
def test_header_matcher(proto: dict[str, object], value: str | None, expected: bool) -> None:
    matcher = _hm(**proto)
    assert matcher.name == "x-key"
    assert matcher.matches(value) is expected


@pytest.mark.parametrize(
    ("proto", "error"),
    [
        pytest.param({"name": ""}, "h.name: must not be empty", id="no-name"),
        pytest.param(
            {"name": "a", "range_match": range_pb2.Int64Range(start=5, end=1)},
            "h.range_match: start 5 must be <= end 1",
            id="inverted-range",
        ),
        pytest.param(
            {"name": "a", "safe_regex_match": _re("[")},
            "h.safe_regex_match.regex: invalid regex",
            id="bad-regex",
        ),
        pytest.param(
            {"name": "a", "string_match": string_pb2.StringMatcher()},
            "h.string_match: no match pattern set",
            id="empty-string-match",
        ),
    ],
)
def test_header_matcher_errors(proto: dict[str, object], error: str) -> None:
    ctx = Ctx()
    assert header_matcher(ctx, "h", rc.HeaderMatcher(**proto)) is None
    assert ctx.errors and ctx.errors[0].startswith(error)


@pytest.mark.parametrize(
    ("proto", "value", "expected"),
    [
        pytest.param({"present_match": True}, "", True, id="present"),
        pytest.param({"present_match": True}, None, False, id="present-absent"),
        pytest.param({}, "x", True, id="nothing-set-present"),
        pytest.param(
            {"string_match": string_pb2.StringMatcher(prefix="ab")}, "abc", True, id="string-hit"
        ),
        pytest.param(
            {"string_match": string_pb2.StringMatcher(prefix="ab")}, "xbc", False, id="string-miss"
        ),
        pytest.param(
            {"string_match": string_pb2.StringMatcher(prefix="ab")}, None, False, id="string-absent"
        ),
    ],
)
def test_query_parameter_matcher(
    proto: dict[str, object], value: str | None, expected: bool
) -> None:
    ctx = Ctx()
    matcher = query_parameter_matcher(ctx, "q", rc.QueryParameterMatcher(name="p", **proto))
    assert isinstance(matcher, QueryParameterMatcher)
    assert matcher.matches(value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        pytest.param(r"\Qa.b\E", "a.b", True, id="quote-literal"),
        pytest.param(r"\Qa.b\E", "axb", False, id="quote-literal-dot"),
        pytest.param(r"a\z", "a", True, id="end-of-text"),
        pytest.param(r"(?<n>x)y", "xy", True, id="named-group"),
        pytest.param(r"\x{41}", "A", True, id="hex-brace"),
        pytest.param(r"[]a]+", "]a", True, id="leading-bracket-literal"),
        pytest.param(r"(?i)abc", "ABC", True, id="flag-i"),
    ],
)
def test_re2_translation(pattern: str, value: str, expected: bool) -> None:
    assert compile_re2(pattern).full_match(value) is expected


def test_dollar_matches_only_at_end_of_text() -> None:
    # RE2 '$' without (?m) does not match before a trailing newline; Python's does.
    assert compile_re2("a$").partial_match("a\n") is False


@pytest.mark.parametrize(
    ("pattern", "substitution", "value", "expected"),
    [
        pytest.param("^/old/(.*)$", r"/new/\1", "/old/x/y", "/new/x/y", id="group"),
        pytest.param("o", "0", "foo", "f00", id="every-match"),
        pytest.param("(a)", r"[\0\\]", "a", "[a\\]", id="whole-and-backslash"),
    ],
)
def test_regex_rewrite(pattern: str, substitution: str, value: str, expected: str) -> None:
    ctx = Ctx()
    rewrite = regex_rewrite(
        ctx,
        "r",
        regex_pb2.RegexMatchAndSubstitute(pattern=_re(pattern), substitution=substitution),
    )
    assert rewrite is not None, ctx.errors
    assert rewrite.apply(value) == expected


@pytest.mark.parametrize(
    ("substitution", "groups", "error"),
    [
        pytest.param(r"\2", 1, "refers to group 2", id="missing-group"),
        pytest.param(r"\n", 0, "invalid escape", id="bad-escape"),
        pytest.param("a\\", 0, "trailing backslash", id="trailing"),
    ],
)
def test_substitution_errors(substitution: str, groups: int, error: str) -> None:
    with pytest.raises(RegexError, match=error):
        check_substitution(substitution, groups)


@pytest.mark.parametrize(
    ("proto", "values", "expected"),
    [
        # Envoy >= 1.39 (match_headers_individually): any value matching is
        # a match, and invert_match inverts that combined result.
        pytest.param({"exact_match": "admin"}, ("user", "admin"), True, id="exact-any"),
        pytest.param({"exact_match": "user,admin"}, ("user", "admin"), False, id="not-joined"),
        pytest.param(
            {"exact_match": "admin", "invert_match": True}, ("user", "admin"), False, id="inverted"
        ),
        pytest.param(
            {"exact_match": "root", "invert_match": True}, ("user", "admin"), True, id="inv-none"
        ),
        pytest.param({"prefix_match": "ad"}, ("user", "admin"), True, id="prefix-second"),
        pytest.param({"suffix_match": "er"}, ("user", "admin"), True, id="suffix-first"),
        pytest.param({"contains_match": "r,a"}, ("user", "admin"), False, id="contains-no-join"),
        pytest.param({"safe_regex_match": _re("a.*")}, ("user", "admin"), True, id="regex"),
        pytest.param({"range_match": _RANGE}, ("x", "15"), True, id="range"),
        pytest.param({"range_match": _RANGE}, ("5", "25"), False, id="range-none"),
        pytest.param({"present_match": True}, ("a", "b"), True, id="present"),
        pytest.param({"present_match": False}, ("a", "b"), False, id="present-false"),
        pytest.param(
            {"string_match": string_pb2.StringMatcher(exact="ADMIN", ignore_case=True)},
            ("user", "admin"),
            True,
            id="string-match-ignore-case",
        ),
    ],
)
def test_header_matcher_each_value(
    proto: dict[str, object], values: tuple[str, ...], expected: bool
) -> None:
    assert _hm(**proto).matches_each(values) is expected
