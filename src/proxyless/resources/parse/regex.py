"""Envoy RE2 patterns (``envoy.type.matcher.v3.RegexMatcher``), compiled by RE2 itself.

Envoy's ``safe_regex`` is Google RE2 (https://github.com/google/re2/wiki/Syntax)
so that matching request data is linear in its length; gRPC's xDS client
compiles the same patterns with RE2 too (gRFC A28). :func:`compile_re2` hands
the pattern unchanged to RE2 through the ``google-re2`` bindings, with the
options Envoy uses (``RE2::Quiet``: UTF-8, leftmost-first rather than longest
match, errors not logged), so what RE2 accepts and how it matches — ``$`` only
at the very end, ASCII-only ``\\d``/``\\w``/``\\s``/``\\b``, ``\\z``,
``\\Q...\\E``, ``\\x{...}``, ``\\p{...}``, POSIX classes, ``(?<name>...)`` and
``(?P<name>...)``, the ``i``/``m``/``s``/``U`` flags, no back-references, no
look-around, repetition counts up to 1000 — is exactly RE2's. A pattern RE2
rejects raises :class:`RegexError` naming the pattern and RE2's reason;
callers add the field path.

Nothing is translated. The one piece written here is the rewrite of
``RegexMatchAndSubstitute.substitution`` (``RE2::GlobalReplace`` with ``\\0``-``\\9``
and ``\\\\``): the bindings only offer Python's ``re.sub`` templates, which
read ``\\n``-style escapes and replace empty matches differently, so
:meth:`~proxyless.resources.model.regex.Regex.replace_all` does RE2's loop
over the bindings' match spans, and :func:`check_substitution` applies
``RE2::CheckRewriteString``'s rules at parse time.
"""

from __future__ import annotations

import re2

from proxyless.resources.model.regex import Regex, RegexError, parse_rewrite

__all__ = ["RegexError", "check_substitution", "compile_re2"]


def _options(*, capture: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = not capture
    return options


_MATCH_OPTIONS = _options(capture=False)
_CAPTURE_OPTIONS = _options(capture=True)


def compile_re2(pattern: str) -> Regex:
    """Compile an RE2 pattern; raise :class:`RegexError` with RE2's reason."""
    try:
        matcher = re2.compile(pattern, _MATCH_OPTIONS)
        capturer = re2.compile(pattern, _CAPTURE_OPTIONS)
    except re2.error as exc:
        raise RegexError(f"invalid regex {pattern!r}: {_reason(exc, pattern)}") from None
    except UnicodeEncodeError:
        raise RegexError(f"invalid regex {pattern!r}: not valid UTF-8") from None
    return Regex(pattern=pattern, matcher=matcher, capturer=capturer)


def _reason(exc: re2.error, pattern: str) -> str:
    raw = exc.args[0] if exc.args else ""
    reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if not reason:
        return "rejected by RE2"
    hint = _hint(reason, pattern)
    return f"{reason} ({hint})" if hint else reason


def _hint(reason: str, pattern: str) -> str | None:
    """Name the Perl feature RE2 leaves out on purpose when its reason shows one."""
    escape = reason.removeprefix("invalid escape sequence: \\")
    if escape != reason:
        if escape[:1] in tuple("123456789"):
            return "back-references are not allowed in RE2"
        if escape == "Z":
            return "RE2 spells the end of text \\z"
        return None
    operator = reason.removeprefix("invalid perl operator: ")
    if operator in ("(?=", "(?!", "(?<=", "(?<!"):
        return "look-around assertions are not allowed in RE2"
    if operator == "(?>":
        return "atomic groups are not allowed in RE2"
    if operator == "(?P" and "(?P=" in pattern:
        return "back-references are not allowed in RE2"
    return None


def check_substitution(substitution: str, groups: int) -> str:
    """Check an RE2 rewrite string against a pattern with ``groups`` groups; return it.

    Raise :class:`RegexError` for a reference to a group the pattern does
    not have or for a backslash not followed by a digit or a backslash.
    """
    parse_rewrite(substitution, groups)
    return substitution
