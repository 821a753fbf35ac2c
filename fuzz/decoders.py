"""Coverage-guided fuzzing of the xDS resource decoders with atheris (libFuzzer).

Each input is one byte choosing the decoder (Listener, RouteConfiguration,
Cluster, ClusterLoadAssignment, Secret, in ``proxyless.resources.types``
order) followed by the serialized resource. :func:`check_one` asserts what a
decoder promises the xDS client (gRFC A46): it returns, never raises; a
result is either a model or a list of problems, each ``field.path: problem``;
bytes that are not the message give a result without a name; and decoding the
same bytes twice gives the same result. Any exception is a finding.

Run (see ``fuzz/README.md``)::

    python fuzz/decoders.py --seeds fuzz/corpus      # write the seed corpus
    python fuzz/decoders.py fuzz/corpus -max_total_time=3600

Without atheris, :func:`check_one` is what ``tests/property/test_atheris_smoke.py``
runs over mutated seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# proxyless is imported inside main() under atheris' instrumentation (so its
# branches guide the fuzzer) or lazily by check_one(), never here.


def _types() -> tuple[Any, ...]:
    from proxyless.resources.types import ALL_TYPES

    return ALL_TYPES


def check_one(data: bytes) -> None:
    """Decode ``data[1:]`` with the decoder ``data[0]`` names; check the contract."""
    if not data:
        return
    all_types = _types()
    resource_type = all_types[data[0] % len(all_types)]
    payload = data[1:]
    result = resource_type.decode(payload)
    if result.errors:
        if result.value is not None:
            raise AssertionError(f"{resource_type}: a value with errors {result.errors}")
        if result.name is None and not (
            len(result.errors) == 1 and result.errors[0].startswith("could not decode ")
        ):
            raise AssertionError(f"{resource_type}: no name, but {result.errors}")
        for error in result.errors:
            if not isinstance(error, str) or not error:
                raise AssertionError(f"{resource_type}: bad problem {error!r}")
    elif result.value is None or not isinstance(result.name, str):
        raise AssertionError(f"{resource_type}: ok without a value or a name: {result}")
    again = resource_type.decode(payload)
    if again != result:
        raise AssertionError(f"{resource_type}: two decodes differ:\n{result}\n{again}")


def seeds() -> list[bytes]:
    """Valid resources of every type, each prefixed with its decoder's byte."""
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    from proxyless.testing import resources as r

    route_config = r.route_config(
        "routes",
        ["svc", "*.svc.example", "svc.*"],
        [
            r.route(path="/a.A/Get", headers=[r.header_match("x-user", prefix="a")], cluster="a"),
            r.route(prefix="/", weighted={"a": 80, "b": 20}, timeout=2.5, hash_headers=["x-user"]),
        ],
    )
    secret = secret_pb2.Secret(name="default")
    secret.tls_certificate.certificate_chain.inline_bytes = b"-----BEGIN CERTIFICATE-----"
    secret.tls_certificate.private_key.filename = "/etc/certs/key.pem"
    messages = [
        (0, r.listener("svc", "routes")),
        (0, r.listener("svc", inline=route_config)),
        (1, route_config),
        (2, r.cluster("a", lb="ring_hash", max_requests=100)),
        (2, r.cluster("agg", aggregate=["a", "b"])),
        (3, r.endpoints("a", [["10.0.0.1:80", "10.0.0.2:80"], ["[::1]:8080"]])),
        (4, secret),
    ]
    return [bytes([index]) + msg.SerializeToString() for index, msg in messages]


def write_seeds(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (directory / f"seed-{i}").write_bytes(seed)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--seeds":
        write_seeds(Path(argv[2]))
        return
    import atheris

    with atheris.instrument_imports(include=["proxyless"]):
        _types()
    atheris.Setup(argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
