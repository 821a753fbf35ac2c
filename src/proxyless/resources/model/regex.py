"""Compiled RE2 patterns: what Envoy does with a ``safe_regex`` at request time.

Envoy and gRPC compile ``envoy.type.matcher.v3.RegexMatcher`` patterns with
Google RE2 (https://github.com/google/re2/wiki/Syntax) because RE2 matches
in time linear in the input: a route, header, query-parameter or SAN
matcher applied to caller-controlled text cannot be made to backtrack.
:class:`Regex` holds one pattern compiled by RE2 itself (through the
``google-re2`` bindings, built by :func:`proxyless.resources.parse.regex.compile_re2`)
and offers the three operations Envoy performs with it:

- :meth:`Regex.full_match` — ``RE2::FullMatch``: route ``safe_regex``,
  ``StringMatcher.safe_regex``, header ``safe_regex_match``;
- :meth:`Regex.partial_match` — ``RE2::PartialMatch``;
- :meth:`Regex.replace_all` — ``RE2::GlobalReplace``: ``regex_rewrite`` of
  the path and of a hash-policy header. The rewrite string uses RE2's
  ``\\0``-``\\9`` group references and ``\\\\`` for a backslash; an empty
  match right after the previous match is skipped, as RE2 does.

Text is handed to RE2 as UTF-8 (RE2's and Envoy's encoding); offsets stay in
bytes, so a pattern using ``\\C`` may split a character, and the rewritten
text then holds U+FFFD where Envoy would hold the raw bytes. RE2 releases
the GIL while it matches, and a compiled pattern is safe to share between
threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re2

__all__ = ["Regex", "RegexError", "parse_rewrite"]


class RegexError(ValueError):
    """A pattern RE2 rejects, or a rewrite string that does not fit its pattern."""


@dataclass(frozen=True, slots=True)
class Regex:
    """One RE2 pattern, compiled twice: without captures for matching, with them for rewrites.

    Equal when the pattern text is equal. ``groups`` is the number of
    capturing groups.
    """

    pattern: str
    matcher: re2._Regexp[str] = field(compare=False, repr=False)
    capturer: re2._Regexp[str] = field(compare=False, repr=False)

    @property
    def groups(self) -> int:
        """The number of capturing groups in the pattern."""
        return self.capturer.groups

    def full_match(self, value: str) -> bool:
        """True when the whole of ``value`` matches (``RE2::FullMatch``)."""
        return self.matcher.fullmatch(_encode(value)) is not None

    def partial_match(self, value: str) -> bool:
        """True when some part of ``value`` matches (``RE2::PartialMatch``)."""
        return self.matcher.search(_encode(value)) is not None

    def replace_all(self, rewrite: str, value: str) -> str:
        """``value`` with every match replaced by ``rewrite`` (``RE2::GlobalReplace``).

        ``rewrite`` must have passed :func:`parse_rewrite` for this pattern.
        """
        pieces = parse_rewrite(rewrite, self.groups)
        data = _encode(value)
        end = len(data)
        out = bytearray()
        pos = 0
        last_end = -1
        count = 0
        while pos <= end:
            found = self.capturer.search(data, pos)
            if found is None:
                break
            start, stop = found.span()
            out += data[pos:start]
            if start == stop == last_end:
                # An empty match where the previous match ended: copy one
                # character and search again from the next one.
                step = _char_len(data, pos)
                out += data[pos : pos + step]
                pos += step or 1
                continue
            for piece in pieces:
                if isinstance(piece, int):
                    group_start, group_stop = found.span(piece)
                    if group_start >= 0:
                        out += data[group_start:group_stop]
                else:
                    out += piece
            pos = last_end = stop
            count += 1
        if count == 0:
            return value
        out += data[pos:]
        return out.decode("utf-8", "replace")


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _char_len(data: bytes, pos: int) -> int:
    """Bytes in the UTF-8 sequence starting at ``pos`` (0 at the end of ``data``)."""
    if pos >= len(data):
        return 0
    lead = data[pos]
    size = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return min(size, len(data) - pos)


@lru_cache(maxsize=256)
def parse_rewrite(rewrite: str, groups: int) -> tuple[bytes | int, ...]:
    """Split an RE2 rewrite string into literal UTF-8 pieces and group numbers.

    ``\\0``-``\\9`` name a group (``\\0`` the whole match) and ``\\\\`` is a
    backslash; RE2 (``RE2::CheckRewriteString``) rejects any other escape, a
    trailing backslash and a reference to a group the pattern lacks, and so
    does this, with :class:`RegexError`.
    """
    pieces: list[bytes | int] = []
    literal: list[str] = []
    i = 0
    while i < len(rewrite):
        ch = rewrite[i]
        if ch != "\\":
            literal.append(ch)
            i += 1
            continue
        if i + 1 == len(rewrite):
            raise RegexError(f"substitution {rewrite!r}: trailing backslash")
        ref = rewrite[i + 1]
        i += 2
        if ref == "\\":
            literal.append("\\")
        elif ref in "0123456789":
            if int(ref) > groups:
                raise RegexError(
                    f"substitution {rewrite!r} refers to group {ref}, the pattern has {groups}"
                )
            if literal:
                pieces.append("".join(literal).encode("utf-8", "surrogatepass"))
                literal.clear()
            pieces.append(int(ref))
        else:
            raise RegexError(f"substitution {rewrite!r}: invalid escape \\{ref}")
    if literal:
        pieces.append("".join(literal).encode("utf-8", "surrogatepass"))
    return tuple(pieces)
