"""String, header and query-parameter matchers of Envoy's route and TLS configs.

Implements the matching semantics of ``envoy.type.matcher.v3.StringMatcher``,
``envoy.config.route.v3.HeaderMatcher`` and ``QueryParameterMatcher`` as
documented in Envoy's ``route_components.proto`` / ``string.proto``, with the
absent-header rules of gRFC A28 and A41: a header that is absent never
matches, except a ``present_match`` whose value equals ``invert_match``
(and except when ``treat_missing_header_as_empty`` is set, in which case the
header is matched as the empty string).

Regexes (``safe_regex``) are compiled by RE2 at parse time
(:mod:`proxyless.resources.model.regex`) and always matched against the
*whole* value (``RE2::FullMatch``, as in Envoy), in time linear in its length.
``ignore_case`` applies to the literal kinds only; the parser rejects it on
a regex, as Envoy does ("ignore_case has no effect for safe_regex").

Matching is pure: no I/O, no clock. A header sent more than once is matched
either as its values joined with ``","`` (gRFC A28, for gRPC) or value by
value (:meth:`HeaderMatcher.matches_each`, Envoy since 1.39 for HTTP: the
matcher holds if any value matches, and ``invert_match`` applies to that
result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxyless.resources.model.regex import Regex

__all__ = [
    "HeaderMatcher",
    "HeaderMatcherKind",
    "QueryParameterMatcher",
    "RegexRewrite",
    "StringMatcher",
    "StringMatcherKind",
]

StringMatcherKind = Literal["exact", "prefix", "suffix", "contains", "safe_regex"]

HeaderMatcherKind = Literal[
    "exact",
    "safe_regex",
    "range",
    "present",
    "prefix",
    "suffix",
    "contains",
    "string_match",
]


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """``envoy.type.matcher.v3.StringMatcher``.

    ``value`` is the literal for exact/prefix/suffix/contains and the source
    pattern for ``safe_regex`` (whose compiled form is ``regex``).
    ``ignore_case`` lower-cases both sides for the literal kinds only.
    """

    kind: StringMatcherKind
    value: str
    ignore_case: bool = False
    regex: Regex | None = None

    def matches(self, value: str) -> bool:
        """True when ``value`` satisfies this matcher."""
        kind = self.kind
        if kind == "safe_regex":
            assert self.regex is not None
            return self.regex.full_match(value)
        expected = self.value
        if self.ignore_case:
            expected = expected.lower()
            value = value.lower()
        if kind == "exact":
            return value == expected
        if kind == "prefix":
            return value.startswith(expected)
        if kind == "suffix":
            return value.endswith(expected)
        return expected in value  # contains


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """``envoy.config.route.v3.HeaderMatcher``.

    ``kind`` is the proto oneof that was set. Every string kind (``exact``,
    ``safe_regex``, ``prefix``, ``suffix``, ``contains``, ``string_match``)
    is evaluated through ``string_matcher``; the deprecated ``*_match``
    fields are case sensitive. ``range`` matches a signed decimal integer
    value in ``[range_start, range_end)``. ``present`` holds the value of
    ``present_match``. A matcher with no oneof set is a presence check
    (Envoy), stored as ``kind="present", present=True``.
    """

    name: str
    kind: HeaderMatcherKind
    string_matcher: StringMatcher | None = None
    range_start: int = 0
    range_end: int = 0
    present: bool = True
    invert_match: bool = False
    treat_missing_header_as_empty: bool = False

    def matches(self, value: str | None) -> bool:
        """Match one header; ``value`` None means the header is absent.

        A repeated header's values come joined with ``","`` (gRFC A28).
        """
        if value is None:
            if not self.treat_missing_header_as_empty:
                # gRFC A41 / Envoy HeaderUtility: an absent header only
                # matches a present_match whose value equals invert_match.
                return self.kind == "present" and self.present == self.invert_match
            value = ""
        return self._value_matches(value) != self.invert_match

    def matches_each(self, values: tuple[str, ...]) -> bool:
        """Match a header sent several times (``values``, at least one):
        true when any value matches, then inverted by ``invert_match``
        (Envoy's ``match_headers_individually``)."""
        test = self._value_matches
        return any(test(v) for v in values) != self.invert_match

    def _value_matches(self, value: str) -> bool:
        kind = self.kind
        if kind == "present":
            return self.present
        if kind == "range":
            return _in_range(value, self.range_start, self.range_end)
        assert self.string_matcher is not None
        return self.string_matcher.matches(value)


def _in_range(value: str, start: int, end: int) -> bool:
    text = value.strip()
    body = text[1:] if text[:1] in "+-" else text
    if not body.isdigit() or not body.isascii():
        return False
    number = int(text)
    if not -(2**63) <= number < 2**63:
        return False
    return start <= number < end


@dataclass(frozen=True, slots=True)
class QueryParameterMatcher:
    """``envoy.config.route.v3.QueryParameterMatcher``.

    A parameter that is absent never matches, except with ``present_match:
    false`` (``absent``), which matches only an absent parameter (Envoy
    1.40). With ``string_match`` unset (``present_match: true`` or nothing
    set) a present parameter matches, whatever its value, as in Envoy.
    """

    name: str
    string_match: StringMatcher | None = None
    present_match: bool = False
    absent: bool = False

    def matches(self, value: str | None) -> bool:
        """Match the first value of the parameter; None means absent."""
        if self.absent:
            return value is None
        if value is None:
            return False
        if self.string_match is None:
            return True
        return self.string_match.matches(value)


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """``envoy.type.matcher.v3.RegexMatchAndSubstitute``.

    ``substitution`` is RE2's rewrite string: ``\\0``-``\\9`` name a group
    and ``\\\\`` is a backslash (checked against ``pattern`` by the parser).
    Every match is replaced (``RE2::GlobalReplace``), as in Envoy.
    """

    pattern: Regex
    substitution: str

    def apply(self, value: str) -> str:
        """Return ``value`` with every match of ``pattern`` substituted."""
        return self.pattern.replace_all(self.substitution, value)
