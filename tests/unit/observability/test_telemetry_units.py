"""Pure pieces of the telemetry: switches from the environment, request
ids, response flags, the access-log record, and CallTelemetry driven by
hand with the SDK's in-memory exporter."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxyless.lb.state import EndpointState
from proxyless.observability import access_log, flags, settings
from proxyless.observability.telemetry import CallTelemetry, base_headers, start_call
from proxyless.resilience.outcome import (
    CONNECT_FAILURE,
    PER_TRY_TIMEOUT,
    RESET,
    SUCCESS,
    Outcome,
)
from proxyless.resources.model.endpoint import Endpoint, Locality
from proxyless.runtime.call import Attempt


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({}, "tracing", True),
        ({"PROXYLESS_TRACING": "0"}, "tracing", False),
        ({"PROXYLESS_METRICS": "off"}, "metrics", False),
        ({"PROXYLESS_REQUEST_ID": "false"}, "request_id", False),
        ({"PROXYLESS_REQUEST_ID": "1"}, "request_id", True),
        ({}, "request_id", None),
        ({"PROXYLESS_PROPAGATION": "no"}, "propagation", False),
        ({}, "access_log", False),
        ({"PROXYLESS_ACCESS_LOG": "1"}, "access_log", True),
        ({"PROXYLESS_ACCESS_LOG_SAMPLE": "0.25"}, "access_log_sample", 0.25),
    ],
)
def test_switches_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, value: object
) -> None:
    for name in ("PROXYLESS_TRACING", "PROXYLESS_METRICS", "PROXYLESS_REQUEST_ID",
                 "PROXYLESS_PROPAGATION", "PROXYLESS_ACCESS_LOG", "PROXYLESS_ACCESS_LOG_SAMPLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert getattr(settings.Settings.from_env(), field) == value


@pytest.mark.parametrize("raw", ["lots", "1.5", "-0.1"])
def test_a_bad_sampling_rate_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("PROXYLESS_ACCESS_LOG_SAMPLE", raw)
    with pytest.raises(ValueError, match=r"\$PROXYLESS_ACCESS_LOG_SAMPLE=.*between 0 and 1"):
        settings.Settings.from_env()


def test_configure_refuses_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="access_log_sample"):
        settings.configure(access_log_sample=2.0)


def test_request_ids_are_uuid4() -> None:
    for _ in range(200):
        rid = settings.new_request_id()
        parsed = uuid.UUID(rid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == rid


@pytest.mark.parametrize(
    ("outcome", "flag"),
    [
        (SUCCESS, ""),
        (CONNECT_FAILURE, "UF"),
        (RESET, "UC"),
        (PER_TRY_TIMEOUT, "UT"),
        (Outcome("refused_stream", None), "UR"),
        (Outcome("local_circuit_open", None), "UO"),
        (Outcome.grpc("UNAVAILABLE"), ""),
        (Outcome.http(503), ""),
    ],
)
def test_outcome_flags(outcome: Outcome, flag: str) -> None:
    assert flags.outcome_flag(outcome) == flag


@pytest.mark.parametrize(
    ("given", "text"),
    [(set(), "-"), ({"URX", "UF"}, "UF,URX"), ({"DC", "UT"}, "UT,DC"), ({"ZZ", "NR"}, "NR,ZZ")],
)
def test_flags_are_joined_in_envoys_order(given: set[str], text: str) -> None:
    assert flags.join(given) == text


def test_request_ids_without_telemetry_are_passed_on_or_generated_on_request() -> None:
    # "auto" (the default): nothing to add without a context or an id to pass on
    assert base_headers(None) == ()
    token = settings.set_request_id("from-the-server")
    try:
        assert dict(base_headers(None)) == {"x-request-id": "from-the-server"}
    finally:
        settings.reset_request_id(token)
    settings.configure(request_id=True)
    try:
        assert set(dict(base_headers(None))) == {"x-request-id"}
        assert base_headers("given") == ()
    finally:
        settings.configure(request_id="auto")
    assert settings.settings.request_id is None


def test_configure_refuses_a_bad_request_id_switch() -> None:
    with pytest.raises(ValueError, match="request_id"):
        settings.configure(request_id="sometimes")  # type: ignore[arg-type]


def test_base_headers_inject_the_current_context() -> None:
    ctx = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(1))
        )
    )
    token = otel_context.attach(ctx)
    try:
        headers = dict(base_headers("rid"))
    finally:
        otel_context.detach(token)
    assert headers["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01"


def test_no_telemetry_object_without_providers_or_logs() -> None:
    assert start_call(grpc=True, method="/a.B/C", target="xds:///a", authority="a") is None


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, tp
    tp.shutdown()


def _attempt(port: int) -> Attempt:
    es = EndpointState(Endpoint("10.0.0.1", port), Locality("r", "z", "s"), 0)
    return Attempt(es, None, None, None, False)


def _tel(tp: Any) -> CallTelemetry:
    return CallTelemetry(
        grpc=True, method="/pkg.Svc/Get", target="xds:///svc", authority="svc:80",
        path="", request_id="rid-1", tracer_provider=tp, inst=None,
    )  # fmt: skip


def test_a_hedged_call_reports_each_attempt_and_cancels_the_loser(
    traced: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = traced
    tel = _tel(provider)
    tel.routed("r1", "c1")
    first, second = _attempt(1), _attempt(2)
    tel.attempt_started(first)
    first_headers = dict(tel.headers)
    tel.attempt_started(second, hedge=True)
    assert dict(tel.headers)["traceparent"] != first_headers["traceparent"]
    assert "x-request-id" not in first_headers  # the request carries its own
    tel.attempt_ended(second, SUCCESS)
    tel.finish("OK")
    tel.finish("UNKNOWN")  # only the first report counts
    by_name: dict[str, list[Any]] = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    (call,) = by_name["Sent.pkg.Svc/Get"]
    attempts = sorted(
        by_name["Attempt.pkg.Svc/Get"], key=lambda s: s.attributes["proxyless.attempt"]
    )
    assert [a.attributes.get("proxyless.cancelled") for a in attempts] == [True, None]
    assert attempts[1].attributes["proxyless.retry_reason"] == "hedge"
    assert attempts[0].attributes["proxyless.locality"] == "r/z/s"
    assert (
        call.attributes["rpc.grpc.status_code"] == 0 and call.attributes["proxyless.attempts"] == 2
    )
    assert tel.hedges == 1 and tel.retries == 0


def test_the_access_log_record(caplog: pytest.LogCaptureFixture) -> None:
    tel = _tel(None)
    tel.routed("r1", "c1")
    attempt = _attempt(8080)
    tel.attempt_started(attempt)
    tel.attempt_ended(attempt, CONNECT_FAILURE)
    settings.configure(access_log=True)
    try:
        with caplog.at_level(logging.INFO, logger="proxyless.access"):
            tel.finish("UNAVAILABLE", RuntimeError("no"), "", retries_exhausted=True)
    finally:
        settings.configure(access_log=False)
    (record,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert record["response_flags"] == "UF,URX"
    assert record["upstream_host"] == "10.0.0.1:8080" and record["upstream_cluster"] == "c1"
    assert record["route_name"] == "r1" and record["request_id"] == "rid-1"
    assert record["status"] == "UNAVAILABLE" and record["error"] == "no"
    assert record["start_time"].endswith("Z") and record["trace_id"] == "-"
    assert access_log.LOGGER.name == "proxyless.access"
