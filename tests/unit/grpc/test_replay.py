"""The client-stream replay buffer (gRFC A6 per-call retry buffer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxyless.grpc import _invocation
from proxyless.grpc._invocation import Replay


def test_replay_buffer_commits_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_invocation, "REPLAY_LIMIT", 5)
    replay = Replay(iter([b"12", b"34", b"56", b"78"]), None)
    first = replay.attempt()
    assert [next(first), next(first)] == [b"12", b"34"]
    assert not replay.committed and replay.buffer == [b"12", b"34"]
    second = replay.attempt()  # a retry replays what was sent, then goes on
    assert list(second) == [b"12", b"34", b"56", b"78"]
    assert replay.committed and replay.buffer == []


@pytest.mark.parametrize("async_source", [False, True], ids=["iterator", "async-iterator"])
def test_aio_replay_replays_then_continues(async_source: bool) -> None:
    async def agen() -> AsyncIterator[bytes]:
        for m in (b"a", b"b", b"c"):
            yield m

    async def main() -> tuple[list[bytes], list[bytes]]:
        replay = Replay(agen() if async_source else iter([b"a", b"b", b"c"]), None)
        it = replay.aattempt()
        first = [await it.__anext__(), await it.__anext__()]
        second = [m async for m in replay.aattempt()]
        return first, second

    first, second = asyncio.run(main())
    assert first == [b"a", b"b"]
    assert second == [b"a", b"b", b"c"]


def test_serializer_sizes_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_invocation, "REPLAY_LIMIT", 3)
    replay = Replay(iter(["x", "y"]), lambda m: m.encode() * 2)
    assert list(replay.attempt()) == ["x", "y"]
    assert replay.committed  # 2 + 2 bytes > 3
