"""Outcome classification, pushback parsing and the gRPC status mapping."""

from __future__ import annotations

import pytest

from proxyless.resilience import (
    CONNECT_FAILURE,
    LOCAL_CIRCUIT_OPEN,
    OVERALL_TIMEOUT,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    RESET,
    SUCCESS,
    Outcome,
    grpc_status_name,
    http_status_to_grpc,
    outlier_class,
    parse_grpc_pushback,
    parse_retry_after,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent-means-backoff"),
        pytest.param("0", 0.0, id="zero-ms"),
        pytest.param("250", 0.25, id="ms-to-seconds"),
        pytest.param(b"1500", 1.5, id="bytes"),
        pytest.param(" 10 ", 0.01, id="whitespace"),
        pytest.param("-1", "stop", id="negative-stops"),
        pytest.param("", "stop", id="empty-stops"),
        pytest.param("1.5", "stop", id="not-integer-stops"),
        pytest.param("abc", "stop", id="garbage-stops"),
        pytest.param("١٢", "stop", id="non-ascii-digits-stop"),
    ],
)
def test_parse_grpc_pushback(value: str | bytes | None, expected: object) -> None:
    assert parse_grpc_pushback(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(b"3", 3.0, id="bytes"),
        pytest.param("Tue, 14 Nov 2023 22:13:40 GMT", 20.0, id="imf-fixdate"),
        pytest.param("Tue Nov 14 22:13:40 2023", 20.0, id="asctime"),
        pytest.param("Tue, 14 Nov 2023 22:13:00 GMT", 0.0, id="date-in-past-is-zero"),
        pytest.param("-5", None, id="negative-ignored"),
        pytest.param("soon", None, id="garbage-ignored"),
        pytest.param("", None, id="empty-ignored"),
    ],
)
def test_parse_retry_after(value: str | bytes | None, expected: float | None) -> None:
    # NOW + 20 s is Tue, 14 Nov 2023 22:13:40 GMT
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("outcome", "kind", "status"),
    [
        pytest.param(Outcome.grpc(0), "success", None, id="grpc-ok-code"),
        pytest.param(Outcome.grpc("OK"), "success", None, id="grpc-ok-name"),
        pytest.param(Outcome.grpc(14), "error_status", "UNAVAILABLE", id="grpc-code-to-name"),
        pytest.param(Outcome.grpc("internal"), "error_status", "INTERNAL", id="grpc-name-upper"),
        pytest.param(Outcome.grpc(99), "error_status", "UNKNOWN", id="grpc-out-of-range"),
        pytest.param(Outcome.http(200), "success", 200, id="http-200"),
        pytest.param(Outcome.http(302), "success", 302, id="http-302"),
        pytest.param(Outcome.http(404), "error_status", 404, id="http-404"),
        pytest.param(Outcome.http(503), "error_status", 503, id="http-503"),
    ],
)
def test_outcome_constructors(outcome: Outcome, kind: str, status: object) -> None:
    assert outcome.kind == kind
    assert outcome.status == status


def test_grpc_ok_without_pushback_is_the_shared_success() -> None:
    assert Outcome.grpc(0) is SUCCESS


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        pytest.param(Outcome.grpc(14), "UNAVAILABLE", id="grpc"),
        pytest.param(Outcome.http(503), "HTTP 503", id="http"),
        pytest.param(PER_TRY_TIMEOUT, "per-try timeout", id="per-try"),
        pytest.param(OVERALL_TIMEOUT, "timeout", id="overall"),
        pytest.param(CONNECT_FAILURE, "connect failure", id="connect"),
    ],
)
def test_describe(outcome: Outcome, text: str) -> None:
    assert outcome.describe() == text


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(SUCCESS, "success", id="success"),
        pytest.param(Outcome.http(404), "success", id="http-4xx-is-not-a-host-failure"),
        pytest.param(Outcome.http(500), "external_5xx", id="http-500"),
        pytest.param(Outcome.http(501), "external_5xx", id="http-501"),
        pytest.param(Outcome.http(502), "external_gateway", id="http-502"),
        pytest.param(Outcome.http(503), "external_gateway", id="http-503"),
        pytest.param(Outcome.http(504), "external_gateway", id="http-504"),
        pytest.param(Outcome.grpc("INTERNAL"), "external_5xx", id="grpc-internal"),
        pytest.param(Outcome.grpc("UNKNOWN"), "external_5xx", id="grpc-unknown"),
        pytest.param(Outcome.grpc("DATA_LOSS"), "external_5xx", id="grpc-data-loss"),
        pytest.param(Outcome.grpc("UNAVAILABLE"), "external_gateway", id="grpc-unavailable"),
        pytest.param(
            Outcome.grpc("DEADLINE_EXCEEDED"), "external_gateway", id="grpc-deadline-from-server"
        ),
        pytest.param(Outcome.grpc("UNIMPLEMENTED"), "success", id="grpc-unimplemented"),
        pytest.param(Outcome.grpc("NOT_FOUND"), "success", id="grpc-not-found"),
        pytest.param(Outcome.grpc("RESOURCE_EXHAUSTED"), "success", id="grpc-resource-exhausted"),
        pytest.param(RESET, "external_gateway", id="transport-reset"),
        pytest.param(CONNECT_FAILURE, "local_connect", id="unavailable-on-connect"),
        pytest.param(REFUSED_STREAM, "local_connect", id="refused-stream"),
        pytest.param(PER_TRY_TIMEOUT, "local_timeout", id="per-try-timeout"),
        pytest.param(OVERALL_TIMEOUT, "local_timeout", id="deadline"),
        pytest.param(LOCAL_CIRCUIT_OPEN, "ignored", id="breaker-overflow"),
    ],
)
def test_outlier_classification(outcome: Outcome, expected: str) -> None:
    assert outlier_class(outcome) == expected


@pytest.mark.parametrize(
    ("http", "grpc"),
    [
        pytest.param(400, 13, id="400-internal"),
        pytest.param(401, 16, id="401-unauthenticated"),
        pytest.param(403, 7, id="403-permission-denied"),
        pytest.param(404, 12, id="404-unimplemented"),
        pytest.param(429, 14, id="429-unavailable"),
        pytest.param(503, 14, id="503-unavailable"),
        pytest.param(500, 2, id="500-unknown"),
    ],
)
def test_http_status_to_grpc(http: int, grpc: int) -> None:
    assert http_status_to_grpc(http) == grpc


def test_grpc_status_names() -> None:
    assert grpc_status_name(4) == "DEADLINE_EXCEEDED"
    assert grpc_status_name(-1) == "UNKNOWN"
