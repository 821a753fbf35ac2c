"""Typed reading of one YAML document with issues that name the field path.

Every reader method takes the raw value and its field path
(``spec.http[0].route[1].weight``), returns the typed value or None, and
records an :class:`~proxyless.controlplane.istio.model.Issue` for anything
wrong: a wrong type or value is an error, an unknown or unsupported field a
warning. Durations use the protobuf/Go form Istio accepts (``1.5s``,
``100ms``, ``1m30s``, ``2h``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from proxyless.controlplane.istio.model import Issue, Source
from proxyless.resources.parse.regex import RegexError, compile_re2

__all__ = ["DocReader", "check_regex", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float | None:
    """Seconds for ``1.5s``/``100ms``/``1m30s``; None if not a duration."""
    text = text.strip()
    if not text:
        return None
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def check_regex(pattern: str) -> str | None:
    """None if ``pattern`` is valid RE2 (Envoy's and gRPC's regex engine), else why not."""
    try:
        compile_re2(pattern)
    except RegexError as exc:
        return str(exc)
    return None


class DocReader:
    """Reads one document, collecting issues against its :class:`Source`."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.issues: list[Issue] = []

    # reporting -------------------------------------------------------------------
    def error(self, path: str, message: str) -> None:
        self.issues.append(Issue.at("error", self.source, path, message))

    def warn(self, path: str, message: str) -> None:
        self.issues.append(Issue.at("warning", self.source, path, message))

    def info(self, path: str, message: str) -> None:
        self.issues.append(Issue.at("info", self.source, path, message))

    @property
    def ok(self) -> bool:
        return not any(i.is_error for i in self.issues)

    # structure -------------------------------------------------------------------
    def mapping(
        self,
        value: Any,
        path: str,
        known: Collection[str] = (),
        unsupported: Mapping[str, str] | None = None,
        *,
        required: bool = False,
    ) -> dict[str, Any] | None:
        """A mapping; warns about fields neither ``known`` nor ``unsupported``."""
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {_type_name(value)}")
            return None
        unsupported = unsupported or {}
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"field names must be strings, not {key!r}")
            elif key in unsupported:
                why = unsupported[key]
                self.warn(_join(path, key), f"not supported, ignored{': ' + why if why else ''}")
            elif known and key not in known:
                self.warn(_join(path, key), "unknown field, ignored")
        return value

    def items(self, value: Any, path: str, *, required: bool = False) -> list[Any]:
        if value is None:
            if required:
                self.error(path, "is required")
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {_type_name(value)}")
            return []
        return value

    # scalars ---------------------------------------------------------------------
    def string(self, value: Any, path: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, not {_type_name(value)} ({value!r})")
            return None
        if required and not value:
            self.error(path, "must not be empty")
            return None
        return value

    def integer(
        self,
        value: Any,
        path: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = False,
    ) -> int | None:
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be an integer, not {_type_name(value)} ({value!r})")
            return None
        if minimum is not None and value < minimum:
            self.error(path, f"must be at least {minimum}, got {value}")
            return None
        if maximum is not None and value > maximum:
            self.error(path, f"must be at most {maximum}, got {value}")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, not {value!r}")
            return None
        return value

    def enum(
        self, value: Any, path: str, choices: Collection[str], *, required: bool = False
    ) -> str | None:
        text = self.string(value, path, required=required)
        if text is None:
            return None
        if text not in choices:
            self.error(path, f"must be one of {', '.join(sorted(choices))}; got {text!r}")
            return None
        return text

    def duration(self, value: Any, path: str, *, positive: bool = False) -> float | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a duration such as '1s' or '250ms', not {value!r}")
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.error(path, f"must be a duration such as '1s' or '250ms', not {value!r}")
            return None
        if positive and seconds <= 0:
            self.error(path, f"must be greater than 0, got {value!r}")
            return None
        return seconds

    def percent(self, value: Any, path: str) -> float | None:
        """An Istio ``Percent`` ({value: 0..100})."""
        box = self.mapping(value, path, known=("value",))
        if box is None:
            return None
        raw = box.get("value", 0.0)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            self.error(_join(path, "value"), f"must be a number, not {raw!r}")
            return None
        if not 0 <= raw <= 100:
            self.error(_join(path, "value"), f"must be between 0 and 100, got {raw}")
            return None
        return float(raw)

    def labels(self, value: Any, path: str) -> dict[str, str]:
        box = self.mapping(value, path)
        if box is None:
            return {}
        out: dict[str, str] = {}
        for key, val in box.items():
            if not isinstance(val, str):
                self.error(
                    _join(path, str(key)),
                    f"label values must be strings (quote {val!r} in YAML)",
                )
                continue
            out[str(key)] = val
        return out

    def regex(self, pattern: str, path: str) -> bool:
        problem = check_regex(pattern)
        if problem is not None:
            self.error(path, problem)
            return False
        return True


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
