"""Envoy RE2 patterns (``envoy.type.matcher.v3.RegexMatcher``) as Python ``re``.

Envoy's ``safe_regex`` uses Google RE2 syntax
(https://github.com/google/re2/wiki/Syntax). Python's ``re`` accepts most of
it; this module rewrites the few RE2 forms Python spells differently
(``\\z``, ``\\Q...\\E``, ``\\x{...}``, ``(?<name>...)``, POSIX classes such as
``[[:alpha:]]``, and ``$`` which in RE2 matches only at the very end) and
rejects what RE2 itself would reject (back-references, look-around, atomic
groups) or what Python cannot express (``\\p{...}`` Unicode classes, ``\\C``).
Patterns compile with ``re.ASCII``: in RE2 ``\\d``, ``\\w``, ``\\s`` and
``\\b`` are ASCII-only.

Rewrite substitutions (``RegexMatchAndSubstitute.substitution``) use RE2's
``\\0``-``\\9`` group references and ``\\\\`` for a backslash; they are
translated to ``re.sub`` templates.
"""

from __future__ import annotations

import re
import warnings

__all__ = ["RegexError", "compile_re2", "translate_substitution"]

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


class RegexError(ValueError):
    """The pattern is not valid RE2 or cannot be expressed in Python."""


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern; raise :class:`RegexError` with a short reason."""
    translated = _translate(pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise RegexError(f"invalid regex {pattern!r}: {exc}") from None
    except (OverflowError, RecursionError) as exc:
        raise RegexError(f"invalid regex {pattern!r}: {exc}") from None


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    multiline = _has_flag(pattern, "m")

    def fail(why: str) -> RegexError:
        return RegexError(f"invalid regex {pattern!r}: {why}")

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise fail("trailing backslash")
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if nxt == "z":
                out.append("\\Z")
                i += 2
                continue
            if nxt in "pP":
                raise fail("Unicode classes (\\p, \\P) are not supported")
            if nxt == "C":
                raise fail("\\C is not supported")
            if nxt.isdigit() and nxt != "0":
                raise fail("back-references are not allowed in RE2")
            if nxt == "x" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                digits = pattern[i + 3 : end] if end > 0 else ""
                if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise fail("bad \\x{...} escape")
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise fail("\\x{...} code point out of range")
                out.append(f"\\U{code:08x}")
                i = end + 1
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end > 0 else ""
                if name.startswith("^"):
                    raise fail("negated POSIX classes are not supported")
                if name not in _POSIX_CLASSES:
                    raise fail(f"unknown POSIX class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
            if ch == "[":
                out.append("\\[")
                i += 1
                continue
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # A ']' right after '[' or '[^' is a literal in both syntaxes.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 : i + 4]
            if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                raise fail("look-around assertions are not allowed in RE2")
            if rest[:1] == ">":
                raise fail("atomic groups are not allowed in RE2")
            if pattern.startswith("(?P=", i):
                raise fail("back-references are not allowed in RE2")
            if rest[:1] == "<":
                out.append("(?P<")
                i += 3
                continue
            if "U" in _flag_letters(pattern, i + 2):
                raise fail("the U (ungreedy) flag is not supported")
        if ch == "$" and not multiline:
            out.append("\\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    if in_class:
        raise fail("missing closing ]")
    return "".join(out)


def _flag_letters(pattern: str, start: int) -> str:
    letters = []
    for c in pattern[start:]:
        if c.isalpha() or c == "-":
            letters.append(c)
        else:
            break
    return "".join(letters)


def _has_flag(pattern: str, flag: str) -> bool:
    pos = pattern.find("(?")
    while pos >= 0:
        if flag in _flag_letters(pattern, pos + 2).split("-")[0]:
            return True
        pos = pattern.find("(?", pos + 2)
    return False


_GROUP_REF = re.compile(r"\\(.)", re.DOTALL)


def translate_substitution(substitution: str, groups: int) -> str:
    """Turn an RE2 rewrite string into a ``re.sub`` template.

    Raise :class:`RegexError` for a reference to a group the pattern does
    not have or for a backslash not followed by a digit or a backslash.
    """
    out: list[str] = []
    pos = 0
    for match in _GROUP_REF.finditer(substitution):
        out.append(substitution[pos : match.start()].replace("\\", "\\\\"))
        ref = match.group(1)
        if ref == "\\":
            out.append("\\\\")
        elif ref.isdigit() and ref.isascii():
            if int(ref) > groups:
                raise RegexError(
                    f"substitution {substitution!r} refers to group {ref}, the pattern has {groups}"
                )
            out.append(f"\\g<{ref}>")
        else:
            raise RegexError(f"substitution {substitution!r}: invalid escape \\{ref}")
        pos = match.end()
    tail = substitution[pos:]
    if tail.endswith("\\"):
        raise RegexError(f"substitution {substitution!r}: trailing backslash")
    out.append(tail)
    return "".join(out)
