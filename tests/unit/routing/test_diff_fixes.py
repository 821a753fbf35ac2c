"""Differences the differential routing test found, fixed (docs/httpx.md)."""

from __future__ import annotations

import httpx
import pytest

from proxyless.httpx._outcome import local_reply
from proxyless.httpx._upstream import request_info
from proxyless.resources.model.matchers import QueryParameterMatcher
from proxyless.routing.request import header_value


@pytest.mark.parametrize(
    ("matcher", "value", "matched"),
    [
        (QueryParameterMatcher("q", absent=True), None, True),
        (QueryParameterMatcher("q", absent=True), "1", False),
        (QueryParameterMatcher("q", absent=True), "", False),
        (QueryParameterMatcher("q", present_match=True), None, False),
        (QueryParameterMatcher("q", present_match=True), "", True),
        (QueryParameterMatcher("q"), "x", True),
    ],
)
def test_present_match_false_wants_the_parameter_absent(
    matcher: QueryParameterMatcher, value: str | None, matched: bool
) -> None:
    assert matcher.matches(value) is matched


@pytest.mark.parametrize(
    ("raw_path", "path_header"),
    [("/a?", "/a?"), ("/a", "/a"), ("/a?x=1", "/a?x=1"), ("/?", "/?")],
)
def test_path_pseudo_header_keeps_a_bare_question_mark(raw_path: str, path_header: str) -> None:
    request = httpx.Request("GET", f"http://svc{raw_path}")
    info = request_info(request, [], "svc", raw_path, "http")
    assert header_value(info, ":path") == path_header
    assert info.path == raw_path.partition("?")[0]


def test_a_local_answer_to_head_has_no_body() -> None:
    headers = [("content-length", "5")]
    head = local_reply(httpx.Request("HEAD", "http://svc/"), 200, headers, b"hello")
    get = local_reply(httpx.Request("GET", "http://svc/"), 200, headers, b"hello")
    assert head.read() == b"" and head.headers["content-length"] == "5"
    assert get.read() == b"hello"
