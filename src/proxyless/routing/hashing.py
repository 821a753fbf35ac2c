"""Request hash for ring_hash / maglev (gRFC A42; Envoy ``RouteAction.HashPolicy``).

Each hash policy may yield a 64-bit value:

- ``header``: XXH64 (seed 0) of the header value, after ``regex_rewrite``.
  Header visibility follows the route rules: for gRPC, ``-bin`` headers and
  pseudo-headers are absent (gRFC A42), ``content-type`` defaults to
  ``application/grpc``; for HTTP the pseudo-headers ``:path`` & co. exist.
  Repeated values were joined with ``","`` by the adapter.
- ``cookie`` (HTTP only): XXH64 of the named cookie's value from the
  ``cookie`` header. Cookies are never generated here (Envoy would set one
  when ``ttl`` is given; a client has no response to set it on).
- ``query_parameter`` (HTTP only): XXH64 of the first value, as in the URL.
- ``connection_properties`` with ``source_ip``: XXH64 of the source address.
- ``filter_state`` with key ``io.grpc.channel_id``: the channel's id itself,
  a random per-channel value (grpc-go and C-core use it unhashed). Other
  keys yield nothing.

Values combine as ``hash = rotl64(hash, 1) ^ value``; a ``terminal`` policy
stops evaluation once a hash exists (Envoy ``HashPolicyImpl``). When no
policy yields a value the request gets a random 64-bit hash from the
injected RNG, so it lands on a random endpoint (gRFC A42).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import xxhash

from proxyless.resources.model import HashPolicy
from proxyless.routing.request import RequestInfo, header_value, parse_query

__all__ = ["CHANNEL_ID_KEY", "cookie_value", "policy_hash", "request_hash", "xxh64"]

log = logging.getLogger("proxyless.routing")

#: The only filter_state key gRPC defines (gRFC A42).
CHANNEL_ID_KEY = "io.grpc.channel_id"

_MASK = (1 << 64) - 1
_xxh64_intdigest = xxhash.xxh64_intdigest


def xxh64(text: str, seed: int = 0) -> int:
    """XXH64 of the UTF-8 bytes of ``text``.

    A lone surrogate (a caller can put one in gRPC metadata) is encoded as
    is (``surrogatepass``), as regex matching does, instead of failing the
    request inside routing; the plain encode stays the fast path.
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return int(_xxh64_intdigest(data, seed))


def cookie_value(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``cookie`` header, or None.

    Pairs are separated by ``;``, surrounding blanks ignored; the first pair
    with the name wins and one pair of double quotes around the value is
    removed (Envoy ``Utility::parseCookieValue``).
    """
    for pair in cookie_header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key == name:
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def policy_hash(policy: HashPolicy, request: RequestInfo, channel_id: int) -> int | None:
    """The hash one policy yields for ``request``, or None."""
    kind = policy.kind
    if kind == "header":
        value = header_value(request, policy.name)
        if value is None:
            return None
        if policy.regex_rewrite is not None:
            value = policy.regex_rewrite.apply(value)
        return xxh64(value)
    if kind == "filter_state":
        if policy.name == CHANNEL_ID_KEY:
            return channel_id & _MASK
        return None
    if kind == "connection_properties":
        if policy.source_ip and request.source_ip:
            return xxh64(request.source_ip)
        return None
    if request.is_grpc:
        return None  # cookies and query parameters do not exist for gRPC
    if kind == "cookie":
        header = request.headers.get("cookie")
        if header is None:
            return None
        found = cookie_value(header, policy.name)
        return None if found is None else xxh64(found)
    if kind == "query_parameter":
        first = parse_query(request.query).get(policy.name)
        return None if first is None else xxh64(first)
    return None


def request_hash(
    policies: Sequence[HashPolicy],
    request: RequestInfo,
    *,
    channel_id: int,
    rng: random.Random,
) -> int:
    """The 64-bit hash of ``request`` under ``policies`` (see the module docstring)."""
    result: int | None = None
    for policy in policies:
        value = policy_hash(policy, request, channel_id)
        if value is not None:
            if result is None:
                result = value
            else:
                result = (((result << 1) | (result >> 63)) & _MASK) ^ value
        if policy.terminal and result is not None:
            break
    if result is None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "no hash policy matched %s%s (%d policies); using a random hash",
                request.authority,
                request.path,
                len(policies),
            )
        return rng.getrandbits(64)
    return result
