"""Example budgets and the "only our errors escape" checks the property tests share."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from typing import Any

#: ``PROXYLESS_FUZZ=long`` multiplies every test's example budget.
SCALE = 100 if os.environ.get("PROXYLESS_FUZZ") == "long" else 1

_PATH_HEAD = re.compile(r"[a-z_][a-z0-9_]*")


def examples(n: int) -> int:
    """The example budget of a test that draws ``n`` examples in CI."""
    return n * SCALE


def check_decode_result(result: Any, top_fields: Sequence[str]) -> None:
    """A decoder's result is consistent, and every problem says where it is.

    A result without a name is a message that could not be decoded at all;
    otherwise each problem is ``"field.path: problem"`` whose path starts at a
    field of the resource, or a problem with the resource as a whole that
    names the fields it is about.
    """
    assert isinstance(result.errors, tuple)
    assert all(isinstance(e, str) and e for e in result.errors), result.errors
    if result.ok:
        assert result.value is not None
        assert isinstance(result.name, str)
        return
    assert result.value is None
    if result.name is None:
        assert len(result.errors) == 1 and result.errors[0].startswith("could not decode ")
        return
    for error in result.errors:
        head = _PATH_HEAD.match(error)
        if head is not None and head.group() in top_fields:
            continue
        assert any(field in error for field in top_fields), f"error names no field: {error!r}"


def mutate(data: bytes, rng: random.Random, rounds: int = 4) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted or duplicated."""
    out = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        op = rng.randrange(5)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            pos = min(pos, len(out) - 1)
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and out:
            del out[pos : pos + rng.randint(1, 4)]
        elif op == 3 and out:
            pos = min(pos, len(out) - 1)
            out[pos] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))
        else:
            chunk = out[pos : pos + rng.randint(1, 8)]
            out[pos:pos] = chunk
    return bytes(out)
