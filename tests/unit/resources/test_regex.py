"""RE2 semantics of ``safe_regex`` (Envoy, gRFC A28): syntax, matching, rewrites, linear time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from proxyless.resources.model import RegexRewrite
from proxyless.resources.parse.common import Ctx, header_matcher, string_matcher
from proxyless.resources.parse.regex import RegexError, check_substitution, compile_re2


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        pytest.param(r"a\z", "a", True, id="end-of-text-z"),
        pytest.param(r"\Qa.b*\E", "a.b*", True, id="quote-literal"),
        pytest.param(r"\Qa.b\E", "axb", False, id="quote-literal-dot-is-literal"),
        pytest.param(r"(?P<n>x)y", "xy", True, id="python-named-group"),
        pytest.param(r"(?<n>x)y", "xy", True, id="perl-named-group"),
        pytest.param(r"[[:alpha:]]+", "abZ", True, id="posix-alpha"),
        pytest.param(r"[[:digit:][:upper:]]+", "A1B2", True, id="posix-two-classes"),
        pytest.param(r"[[:^alpha:]]+", "123", True, id="posix-negated"),
        pytest.param(r"[[:^alpha:]]+", "1a", False, id="posix-negated-miss"),
        pytest.param(r"\p{Greek}+", "αβγ", True, id="unicode-class"),
        pytest.param(r"\pN+", "12", True, id="unicode-class-one-letter"),
        pytest.param(r"\x{41}\x{3b1}", "A\u03b1", True, id="hex-brace"),
        pytest.param(r"(?i)abc", "ABC", True, id="flag-i"),
        pytest.param(r"(?i:a)b", "Ab", True, id="flag-i-group"),
        pytest.param(r"(?i:a)b", "AB", False, id="flag-i-group-scope"),
        pytest.param(r"a.c", "a\nc", False, id="dot-not-newline"),
        pytest.param(r"(?s)a.c", "a\nc", True, id="flag-s"),
        pytest.param(r"a.c", "aéc", True, id="dot-one-character"),
        pytest.param(r"\d+", "١٢", False, id="digits-ascii-only"),
        pytest.param(r"\w+", "é", False, id="word-ascii-only"),
        pytest.param(r"a$", "a\n", False, id="dollar-not-before-final-newline"),
        pytest.param(r"(?m)a$\n", "a\n", True, id="dollar-multiline"),
        pytest.param(r"a{2,3}", "aaa", True, id="bounded-repeat"),
        pytest.param(r"a{1000}", "a" * 1000, True, id="repeat-1000"),
        pytest.param(r"(?U)a+", "aaa", True, id="flag-ungreedy-still-full-match"),
        pytest.param(r"[]a]+", "]a", True, id="leading-bracket-literal"),
        pytest.param(r"", "", True, id="empty"),
    ],
)
def test_full_match(pattern: str, value: str, expected: bool) -> None:
    assert compile_re2(pattern).full_match(value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        pytest.param(r"a$", "a\n", False, id="dollar-end-of-text-only"),
        pytest.param(r"(?m)a$", "a\nb", True, id="dollar-multiline-before-newline"),
        pytest.param(r"^b", "a\nb", False, id="caret-start-of-text-only"),
        pytest.param(r"(?m)^b", "a\nb", True, id="caret-multiline"),
        pytest.param(r"\bb", "a b", True, id="word-boundary"),
        pytest.param(r"\bb", "éb", True, id="word-boundary-ascii"),
        pytest.param(r"x", "abc", False, id="miss"),
    ],
)
def test_partial_match(pattern: str, value: str, expected: bool) -> None:
    assert compile_re2(pattern).partial_match(value) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param(r"(a)\1", "back-references are not allowed", id="backref"),
        pytest.param(r"(?P<n>a)(?P=n)", "back-references are not allowed", id="named-backref"),
        pytest.param(r"a(?=b)", "look-around", id="lookahead"),
        pytest.param(r"a(?!b)", "look-around", id="negative-lookahead"),
        pytest.param(r"(?<=a)b", "look-around", id="lookbehind"),
        pytest.param(r"(?<!a)b", "look-around", id="negative-lookbehind"),
        pytest.param(r"(?>a+)", "atomic groups", id="atomic"),
        pytest.param(r"a\Z", r"spells the end of text \z", id="python-end-of-text"),
        pytest.param(r"a{1001}", "invalid repetition size", id="repeat-over-1000"),
        pytest.param(r"(a{100}){100}", "invalid repetition size", id="nested-repeat-over-1000"),
        pytest.param(r"a++", "bad repetition operator", id="possessive"),
        pytest.param(r"[[:alfa:]]", "invalid character class range", id="unknown-posix-class"),
        pytest.param(r"\p{Klingon}", "invalid character class range", id="unknown-unicode-class"),
        pytest.param("a(", "missing )", id="unclosed-group"),
        pytest.param("[a", "missing ]", id="unclosed-class"),
        pytest.param("a\\", "trailing \\", id="trailing-backslash"),
    ],
)
def test_rejected(pattern: str, reason: str) -> None:
    with pytest.raises(RegexError) as info:
        compile_re2(pattern)
    message = str(info.value)
    assert message.startswith(f"invalid regex {pattern!r}: ")
    assert reason in message


def test_rejected_pattern_reported_at_the_field() -> None:
    ctx = Ctx()
    assert string_matcher(ctx, "m", string_pb2.StringMatcher(safe_regex=_re("(?=a)"))) is None
    assert ctx.errors == [
        "m.safe_regex.regex: invalid regex '(?=a)': invalid perl operator: (?= "
        "(look-around assertions are not allowed in RE2)"
    ]


def test_equal_by_pattern() -> None:
    assert compile_re2("a+") == compile_re2("a+")
    assert compile_re2("a+") != compile_re2("a*")
    assert hash(compile_re2("a+")) == hash(compile_re2("a+"))
    assert repr(compile_re2("a+")) == "Regex(pattern='a+')"
    assert compile_re2("(a)(?:b)(?P<c>c)").groups == 2


@pytest.mark.parametrize(
    ("pattern", "substitution", "value", "expected"),
    [
        pytest.param("^/old/(.*)$", r"/new/\1", "/old/x/y", "/new/x/y", id="group"),
        pytest.param("o", "0", "foo", "f00", id="every-match"),
        pytest.param("(a)", r"[\0\\]", "a", "[a\\]", id="whole-and-backslash"),
        pytest.param("(a)|b", r"[\1]", "ab", "[a][]", id="unmatched-group-is-empty"),
        pytest.param("x*", "-", "abxd", "-a-b-d-", id="no-empty-match-after-match"),
        pytest.param("x*", "-", "é", "-é-", id="empty-match-steps-one-character"),
        pytest.param("(.)", r"<\1>", "aé→", "<a><é><→>", id="utf8-characters"),
        pytest.param("a|ab", "X", "ab", "Xb", id="leftmost-first-not-longest"),
        pytest.param("(?U)a+", "X", "aaa", "XXX", id="ungreedy"),
        pytest.param("z", "→", "aza", "a→a", id="non-ascii-substitution"),
        pytest.param("q", "x", "abc", "abc", id="no-match-unchanged"),
        pytest.param(r"\n", "", "a\nb", "ab", id="newline-in-pattern"),
        pytest.param("^", "/v1", "/x", "/v1/x", id="anchored-empty"),
        pytest.param("$", "!", "ab", "ab!", id="end-empty"),
        pytest.param(r"\C", "-", "é", "--", id="any-byte-splits-characters"),
    ],
)
def test_replace_all(pattern: str, substitution: str, value: str, expected: str) -> None:
    regex = compile_re2(pattern)
    rewrite = RegexRewrite(regex, check_substitution(substitution, regex.groups))
    assert rewrite.apply(value) == expected


@pytest.mark.parametrize(
    ("substitution", "groups", "error"),
    [
        pytest.param(r"\2", 1, "refers to group 2, the pattern has 1", id="missing-group"),
        pytest.param(r"\n", 0, r"invalid escape \n", id="escape-n"),
        pytest.param(r"\g<1>", 1, r"invalid escape \g", id="python-group-syntax"),
        pytest.param("a\\", 0, "trailing backslash", id="trailing"),
    ],
)
def test_substitution_rejected(substitution: str, groups: int, error: str) -> None:
    with pytest.raises(RegexError, match=error.replace("\\", "\\\\")):
        check_substitution(substitution, groups)


def _re(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _best_of(fn: Callable[[], object], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


_LENGTH = 50_000
_HOSTILE = "a" * _LENGTH + "!"
_BENIGN = "a" * (_LENGTH + 1)
# Matching is linear: a hostile input costs about what a benign one of the
# same length does. A backtracking engine takes longer than the age of the
# universe on these; the bound is generous so a busy machine cannot flake it.
_MAX_RATIO = 50


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("(a+)+$", id="nested-plus"),
        pytest.param("(a|aa)+$", id="overlapping-alternation"),
        pytest.param("(.*a){20}", id="repeated-star"),
        pytest.param("(a*)*b", id="nested-star"),
        pytest.param("(?:a?){30}a{30}", id="optional-run"),
    ],
)
def test_pathological_patterns_stay_linear(pattern: str) -> None:
    ctx = Ctx()
    header = header_matcher(
        ctx, "h", rc.HeaderMatcher(name="x-user", safe_regex_match=_re(pattern))
    )
    assert header is not None, ctx.errors
    regex = compile_re2(pattern)
    rewrite = RegexRewrite(regex, "x")
    assert not header.matches(_HOSTILE)
    benign_match = _best_of(lambda: header.matches(_BENIGN))
    hostile_match = _best_of(lambda: header.matches(_HOSTILE))
    assert hostile_match <= _MAX_RATIO * benign_match
    benign_search = _best_of(lambda: regex.partial_match(_BENIGN))
    hostile_search = _best_of(lambda: regex.partial_match(_HOSTILE))
    assert hostile_search <= _MAX_RATIO * benign_search
    benign_rewrite = _best_of(lambda: rewrite.apply(_BENIGN))
    hostile_rewrite = _best_of(lambda: rewrite.apply(_HOSTILE))
    assert hostile_rewrite <= _MAX_RATIO * benign_rewrite
