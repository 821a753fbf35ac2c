"""Generate the sync httpx transport from the async one.

``src/proxyless/httpx/_async_transport.py`` is the only hand-written copy of
the transport's I/O; ``_sync_transport.py`` is made from it by token
substitutions (httpcore keeps its sync code the same way): ``async def`` ->
``def``, ``async for`` -> ``for``, ``async with`` -> ``with``, ``await `` ->
nothing, ``asyncio.sleep`` -> ``time.sleep`` (dropping ``import asyncio``),
and whole words from :data:`WORDS` (``AsyncTransport`` -> ``Transport``,
``handle_async_request`` -> ``handle_request``, ``aclose`` -> ``close`` ...).
Whatever must differ between the two is a name mapped here, never a branch
in the code. Import lines whose names a substitution changed are re-sorted
the way ruff's isort orders them (constants, classes, then the rest).

Usage::

    python tools/unasync.py            # rewrite the generated files
    python tools/unasync.py --check    # exit 1 and print a diff when one is stale

Standard library only, so CI can run the check before installing anything.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

#: (source, generated), relative to the repository root.
FILES: Final[tuple[tuple[str, str], ...]] = (
    ("src/proxyless/httpx/_async_transport.py", "src/proxyless/httpx/_sync_transport.py"),
    ("src/proxyless/httpx/_async_tls.py", "src/proxyless/httpx/_sync_tls.py"),
)

#: Whole words replaced everywhere (code, strings, docstrings).
WORDS: Final[dict[str, str]] = {
    "AsyncBaseTransport": "BaseTransport",
    "AnyIOBackend": "SyncBackend",
    "AsyncByteStream": "SyncByteStream",
    "AsyncClient": "Client",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncEndpointTransport": "EndpointTransport",
    "AsyncHTTPTransport": "HTTPTransport",
    "AsyncIterator": "Iterator",
    "AsyncMeshTlsBackend": "MeshTlsBackend",
    "AsyncMirrors": "Mirrors",
    "AsyncNetworkBackend": "NetworkBackend",
    "AsyncNetworkStream": "NetworkStream",
    "AsyncPlaintextGuard": "PlaintextGuard",
    "AsyncReplayStream": "SyncReplayStream",
    "AsyncResponseStream": "SyncResponseStream",
    "AsyncTransport": "Transport",
    "__aiter__": "__iter__",
    "_async_tls": "_sync_tls",
    "aclose": "close",
    "aread": "read",
    "decide_async": "decide",
    "handle_async_request": "handle_request",
    "wait_credentials_async": "wait_credentials",
}

#: Patterns replaced in order, before :data:`WORDS`.
PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"\basync (def|for|with)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
    (re.compile(r"^import asyncio\n", re.MULTILINE), ""),
    (re.compile(r"\basyncio\.sleep\b"), "time.sleep"),
)

_WORD_RE: Final = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True)) + r")\b"
)
_IMPORT_RE: Final = re.compile(
    r"^(?P<head>from [\w.]+ import )(?:\((?P<block>\n[^)]*)\)|(?P<line>[\w, ]+)$)", re.MULTILINE
)
#: asyncio names with no sync counterpart in :data:`PATTERNS`.
_LEFTOVER_RE: Final = re.compile(r"\basyncio\.\w+")

HEADER: Final = """\
# Generated from {source} by tools/unasync.py: do not edit.
# Edit the source, then run `python tools/unasync.py`;
# `python tools/unasync.py --check` fails while this file is out of date.
"""


def _member_key(name: str) -> tuple[int, str, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then everything else."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name.lower(), name


def _sort_import(match: re.Match[str]) -> str:
    head = match["head"]
    if match["line"] is not None:
        names = [n.strip() for n in match["line"].split(",") if n.strip()]
        return head + ", ".join(sorted(names, key=_member_key))
    block = match["block"]
    indent = re.match(r"\n(\s*)", block)
    pad = indent.group(1) if indent else "    "
    names = [n.strip() for n in block.split(",") if n.strip()]
    body = "".join(f"{pad}{n},\n" for n in sorted(names, key=_member_key))
    return f"{head}(\n{body})"


def unasync(text: str) -> str:
    """The sync version of the async source ``text`` (without the header)."""
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    text = _WORD_RE.sub(lambda m: WORDS[m.group(1)], text)
    return _IMPORT_RE.sub(_sort_import, text)


def generate(source: Path, relative: str) -> str:
    """The whole generated file for ``source`` (``relative``: its path as named in the header)."""
    text = unasync(source.read_text(encoding="utf-8"))
    for number, line in enumerate(text.splitlines(), 1):
        leftover = _LEFTOVER_RE.search(line)
        if leftover:
            raise ValueError(f"{relative}: no sync name for {leftover.group(0)} (line {number})")
    return HEADER.format(source=relative) + text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 with a diff when stale"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the repository root (default: this file's parent's parent)",
    )
    args = parser.parse_args(argv)
    stale = 0
    for source, target in FILES:
        wanted = generate(args.root / source, source)
        path = args.root / target
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    wanted.splitlines(keepends=True),
                    f"{target} (on disk)",
                    f"{target} (generated from {source})",
                )
            )
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print(f"{stale} generated file(s) out of date: run `python tools/unasync.py`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
