"""Properties of target parsing (``proxyless.target.parse_target``).

Targets come from application code and configuration files.

==================================  ============================================  ========
property                            why                                           examples
==================================  ============================================  ========
any string: a Target or             a typo must give a message saying what a      300
InvalidTarget                       target looks like, never a ValueError from
                                    somewhere inside
well-formed targets round-trip      ``xds://[authority]/name`` parses back to     150
                                    its authority and (percent-decoded) name
==================================  ============================================  ========
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.errors import InvalidTarget
from proxyless.target import Target, parse_target

from .support import examples

_PIECES = st.sampled_from(
    ("xds", "://", ":///", "/", "%", "%2", "%20", "%2F", ":", "@", " ", "[::1]")
)
TARGETS = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=8).map("".join),
)


@settings(max_examples=examples(300))
@given(text=TARGETS)
def test_any_string(text: str) -> None:
    try:
        target = parse_target(text)
    except InvalidTarget as exc:
        assert repr(text) in str(exc) or "target must be a string" in str(exc)
        return
    assert isinstance(target, Target)
    assert target.uri == text
    assert target.name and not any(c.isspace() for c in target.name)
    assert parse_target(text) == target


@settings(max_examples=examples(50))
@given(value=st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.lists(st.text())))
def test_not_a_string(value: object) -> None:
    try:
        parse_target(value)  # type: ignore[arg-type]
    except InvalidTarget:
        return
    raise AssertionError("a non-string target was accepted")


_NAME = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=20
)
_AUTHORITY = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-:", max_size=12)


@settings(max_examples=examples(150))
@given(authority=_AUTHORITY, name=_NAME)
def test_well_formed_targets_round_trip(authority: str, name: str) -> None:
    if any(c.isspace() for c in name):
        return
    target = parse_target(f"xds://{authority}/{quote(name, safe='')}")
    assert target.authority == (authority or None)
    assert target.name == name
