"""Shared parsing helpers: problem collection, durations, percents, matchers.

Every problem is recorded as ``"field.path: problem"`` and parsing carries on,
so one pass reports everything wrong with a resource (gRFC A46 NACK details).
Fields that are set but not acted on are recorded as ignored paths, found
with ``ListFields()`` against a per-message allow-list; the xDS client logs
them once per resource version.

Duration ranges follow ``google/protobuf/duration.proto`` (seconds in
[0, 315576000000], nanos in [0, 999999999]; negatives are invalid here).
Fractions follow ``envoy.type.v3.FractionalPercent`` (scaled to per million,
values above 100 % capped as Envoy does).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from proxyless.resources.model.matchers import (
    HeaderMatcher,
    QueryParameterMatcher,
    RegexRewrite,
    StringMatcher,
)
from proxyless.resources.model.regex import Regex
from proxyless.resources.parse.regex import RegexError, check_substitution, compile_re2

__all__ = [
    "MAX_DURATION_SECONDS",
    "MAX_UINT32",
    "WHITESPACE",
    "Ctx",
    "LastByName",
    "check_config_source",
    "duration",
    "duration_in_range",
    "fractional_per_million",
    "header_matcher",
    "join",
    "opt_duration",
    "percent",
    "query_parameter_matcher",
    "regex",
    "regex_rewrite",
    "string_matcher",
    "type_name",
    "unhandled",
    "unpack",
    "wrapped",
]

MAX_UINT32 = 2**32 - 1
MAX_DURATION_SECONDS = 315_576_000_000
#: Whitespace, which no domain or header name may hold.
WHITESPACE = re.compile(r"\s")

M = TypeVar("M", bound=Message)
T = TypeVar("T")


class Ctx:
    """Collects problems and ignored field paths while one resource is parsed."""

    __slots__ = ("errors", "ignored")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.ignored: list[str] = []

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path}: {problem}" if path else problem)

    def ignore(self, path: str) -> None:
        self.ignored.append(path)


def join(path: str, name: str) -> str:
    """``join("a.b", "c") == "a.b.c"``; ``join("", "c") == "c"``."""
    return f"{path}.{name}" if path else name


#: ``handled`` tuples (constants in the parsers' code) as sets, by identity.
_ALLOWED: dict[int, tuple[object, frozenset[str]]] = {}


def unhandled(ctx: Ctx, msg: Message, path: str, handled: Iterable[str]) -> None:
    """Record every set field of ``msg`` that is not in ``handled`` as ignored."""
    if isinstance(handled, frozenset | set):
        allowed: frozenset[str] | set[str] = handled
    else:
        got = _ALLOWED.get(id(handled))
        if got is not None and got[0] is handled:
            allowed = got[1]
        else:
            allowed = frozenset(handled)
            if isinstance(handled, tuple) and len(_ALLOWED) < 1024:
                _ALLOWED[id(handled)] = (handled, allowed)
    for descriptor, _ in msg.ListFields():
        if descriptor.name not in allowed:
            ctx.ignore(join(path, descriptor.name))


def wrapped(msg: Message, field: str, default: Any) -> Any:
    """The ``.value`` of a wrapper field (UInt32Value, BoolValue ...) or ``default``."""
    if msg.HasField(field):
        return getattr(msg, field).value
    return default


def duration_in_range(value: Any) -> bool:
    """Whether a ``google.protobuf.Duration`` is one :func:`duration` accepts
    (an unset one reads as 0 s, which is)."""
    seconds: int = value.seconds
    nanos: int = value.nanos
    return 0 <= seconds <= MAX_DURATION_SECONDS and 0 <= nanos <= 999_999_999


def duration(ctx: Ctx, path: str, value: Any) -> float:
    """A ``google.protobuf.Duration`` in seconds; records range problems."""
    seconds = int(value.seconds)
    nanos = int(value.nanos)
    if seconds < 0 or nanos < 0:
        ctx.error(path, "duration must not be negative")
        return 0.0
    if seconds > MAX_DURATION_SECONDS:
        ctx.error(path, f"duration seconds {seconds} exceeds {MAX_DURATION_SECONDS}")
        return 0.0
    if nanos > 999_999_999:
        ctx.error(path, f"duration nanos {nanos} exceeds 999999999")
        return 0.0
    return seconds + nanos / 1e9


def opt_duration(
    ctx: Ctx, msg: Message, field: str, path: str, *, positive: bool = False
) -> float | None:
    """``duration`` of ``msg.field`` when set, else None; ``positive``: must be > 0."""
    if not msg.HasField(field):
        return None
    before = len(ctx.errors)
    value = duration(ctx, join(path, field), getattr(msg, field))
    if positive and value <= 0 and len(ctx.errors) == before:
        ctx.error(join(path, field), "must be > 0")
    return value


_DENOMINATOR_SCALE = {0: 10_000, 1: 100, 2: 1}  # HUNDRED, TEN_THOUSAND, MILLION


def fractional_per_million(ctx: Ctx, path: str, value: Any) -> int:
    """An ``envoy.type.v3.FractionalPercent`` as parts per million (capped at 1e6)."""
    scale = _DENOMINATOR_SCALE.get(int(value.denominator))
    if scale is None:
        ctx.error(join(path, "denominator"), f"unknown denominator {value.denominator}")
        return 0
    return min(int(value.numerator) * scale, 1_000_000)


def percent(ctx: Ctx, path: str, value: Any) -> float:
    """An ``envoy.type.v3.Percent`` (0..100)."""
    number = float(value.value)
    if not 0.0 <= number <= 100.0:
        ctx.error(join(path, "value"), f"percent {number} must be in [0, 100]")
        return 0.0
    return number


def unpack(ctx: Ctx, path: str, any_msg: Any, cls: type[M]) -> M | None:
    """Unpack a ``google.protobuf.Any`` into ``cls``; record a problem if it fails."""
    full_name = cls.DESCRIPTOR.full_name
    type_url: str = any_msg.type_url
    if type_url.rsplit("/", 1)[-1] != full_name:
        ctx.error(path, f"expected type {full_name}, got {type_url or '<empty>'}")
        return None
    msg = cls()
    try:
        msg.ParseFromString(any_msg.value)
    except DecodeError as exc:
        ctx.error(path, f"could not decode {full_name}: {exc}")
        return None
    return msg


def type_name(any_msg: Any) -> str:
    """The full message name an ``Any`` carries."""
    url: str = any_msg.type_url
    return url.rsplit("/", 1)[-1]


def check_config_source(ctx: Ctx, path: str, source: Any) -> None:
    """A ConfigSource must be ``ads`` or ``self``: proxyless speaks ADS only (gRFC A27)."""
    which = source.WhichOneof("config_source_specifier")
    if which not in ("ads", "self"):
        ctx.error(path, f"config source must be ads or self, got {which or 'nothing'}")
    unhandled(
        ctx,
        source,
        path,
        ("ads", "self", "initial_fetch_timeout", "resource_api_version", "authorities"),
    )


def regex(ctx: Ctx, path: str, matcher: Any) -> Regex | None:
    """Compile an ``envoy.type.matcher.v3.RegexMatcher``; None (and a problem) if invalid."""
    if matcher.HasField("google_re2"):
        ctx.ignore(join(path, "google_re2"))
    if not matcher.regex:
        # Envoy's regex.proto: min_len 1; C-core: "field not present".
        ctx.error(join(path, "regex"), "must not be empty")
        return None
    try:
        return compile_re2(matcher.regex)
    except RegexError as exc:
        ctx.error(join(path, "regex"), str(exc))
        return None


def regex_rewrite(ctx: Ctx, path: str, msg: Any) -> RegexRewrite | None:
    """An ``envoy.type.matcher.v3.RegexMatchAndSubstitute``."""
    pattern = regex(ctx, join(path, "pattern"), msg.pattern)
    if pattern is None:
        return None
    try:
        template = check_substitution(msg.substitution, pattern.groups)
    except RegexError as exc:
        ctx.error(join(path, "substitution"), str(exc))
        return None
    return RegexRewrite(pattern=pattern, substitution=template)


def string_matcher(ctx: Ctx, path: str, msg: Any) -> StringMatcher | None:
    """An ``envoy.type.matcher.v3.StringMatcher``."""
    which = msg.WhichOneof("match_pattern")
    ignore_case = bool(msg.ignore_case)
    if which in ("exact", "prefix", "suffix", "contains"):
        value: str = getattr(msg, which)
        if which != "exact" and not value:
            ctx.error(join(path, which), "must not be empty")
            return None
        return StringMatcher(kind=which, value=value, ignore_case=ignore_case)
    if which == "safe_regex":
        if ignore_case:
            # Envoy refuses the combination ("ignore_case has no effect for
            # safe_regex"), and so does gRPC C-core for SAN matchers.
            ctx.error(join(path, "ignore_case"), "ignore_case has no effect for safe_regex")
            return None
        compiled = regex(ctx, join(path, "safe_regex"), msg.safe_regex)
        if compiled is None:
            return None
        return StringMatcher(kind="safe_regex", value=msg.safe_regex.regex, regex=compiled)
    if which == "custom":
        ctx.error(join(path, "custom"), "custom string matchers are not supported")
        return None
    ctx.error(path, "no match pattern set")
    return None


_HEADER_STRING_KINDS = {
    "exact_match": "exact",
    "prefix_match": "prefix",
    "suffix_match": "suffix",
    "contains_match": "contains",
}


def header_matcher(ctx: Ctx, path: str, msg: Any) -> HeaderMatcher | None:
    """An ``envoy.config.route.v3.HeaderMatcher``."""
    name: str = msg.name.lower()
    if not name:
        ctx.error(join(path, "name"), "must not be empty")
        return None
    which = msg.WhichOneof("header_match_specifier")
    common: dict[str, Any] = {
        "name": name,
        "invert_match": bool(msg.invert_match),
        "treat_missing_header_as_empty": bool(msg.treat_missing_header_as_empty),
    }
    if which is None:
        return HeaderMatcher(kind="present", present=True, **common)
    if which in _HEADER_STRING_KINDS:
        kind = _HEADER_STRING_KINDS[which]
        sm = StringMatcher(kind=kind, value=getattr(msg, which))  # type: ignore[arg-type]
        return HeaderMatcher(kind=kind, string_matcher=sm, **common)  # type: ignore[arg-type]
    if which == "safe_regex_match":
        compiled = regex(ctx, join(path, which), msg.safe_regex_match)
        if compiled is None:
            return None
        sm = StringMatcher(kind="safe_regex", value=msg.safe_regex_match.regex, regex=compiled)
        return HeaderMatcher(kind="safe_regex", string_matcher=sm, **common)
    if which == "range_match":
        start, end = int(msg.range_match.start), int(msg.range_match.end)
        if start > end:
            ctx.error(join(path, which), f"start {start} must be <= end {end}")
            return None
        return HeaderMatcher(kind="range", range_start=start, range_end=end, **common)
    if which == "present_match":
        return HeaderMatcher(kind="present", present=bool(msg.present_match), **common)
    # string_match
    sm2 = string_matcher(ctx, join(path, "string_match"), msg.string_match)
    if sm2 is None:
        return None
    return HeaderMatcher(kind="string_match", string_matcher=sm2, **common)


def query_parameter_matcher(ctx: Ctx, path: str, msg: Any) -> QueryParameterMatcher | None:
    """An ``envoy.config.route.v3.QueryParameterMatcher``."""
    if not msg.name:
        ctx.error(join(path, "name"), "must not be empty")
        return None
    which = msg.WhichOneof("query_parameter_match_specifier")
    if which == "string_match":
        sm = string_matcher(ctx, join(path, "string_match"), msg.string_match)
        if sm is None:
            return None
        return QueryParameterMatcher(name=msg.name, string_match=sm)
    if which == "present_match" and not msg.present_match:
        # Envoy 1.40: present_match false matches an absent parameter only
        return QueryParameterMatcher(name=msg.name, absent=True)
    return QueryParameterMatcher(name=msg.name, present_match=bool(msg.present_match))


class LastByName(Generic[T]):
    """What a parser kept of the last resource it accepted under each name,
    for the next one of that name to reuse what did not change (a control
    plane resends a whole resource when a part of it changes). At most
    ``limit`` names; the least recently stored goes first. Safe to use from
    several threads (decoders of several xDS clients may run at once)."""

    __slots__ = ("_by_name", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        self._by_name: dict[str, T] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, name: str) -> T | None:
        return self._by_name.get(name)

    def put(self, name: str, value: T | None) -> None:
        """Keep ``value`` for ``name`` (None: forget the name)."""
        with self._lock:
            self._by_name.pop(name, None)
            if value is None:
                return
            if len(self._by_name) >= self._limit:
                del self._by_name[next(iter(self._by_name))]
            self._by_name[name] = value

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()
