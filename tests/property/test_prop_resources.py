"""Properties of the five resource decoders (``proxyless.resources.types``).

A decoder runs on bytes straight from the control plane and must never
raise (gRFC A46: a bad resource is NACKed by name, its siblings kept).

=====================================  ===========================================  ========
property                               why                                          examples
=====================================  ===========================================  ========
arbitrary bytes decode or fail         the wire is untrusted; ``decode`` never      100 each
cleanly                                raises and a failure carries no name
any message (descriptor-filled)        unknown enums, wrong ``Any`` types, empty     80 each
decodes or names a field path          names, negative durations: every problem
                                       is ``field.path: what`` from the resource
perturbed valid messages               a valid resource with arbitrary fields set    60 each
                                       deep inside: every parser branch, with the
                                       siblings still valid
mutated valid messages (8 mutants      near-valid bytes reach deep parser code       30 each
each: bytes flipped, inserted, cut)    that random bytes never decode into
valid resources decode                 what the strategies build within the rules    40 each
                                       is accepted (no false NACK)
decoding is deterministic              two decodes of the same bytes give equal     (all of
                                       results (models compare equal)               the above)
=====================================  ===========================================  ========
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.resources import types
from proxyless.xds_client.resource_type import ResourceType

from . import protos
from .support import check_decode_result, examples, mutate

DECODERS: dict[str, ResourceType] = {t.short_name: t for t in types.ALL_TYPES}
VALID = {
    "LDS": protos.valid_listener(),
    "RDS": protos.valid_route_configuration(),
    "CDS": protos.valid_cluster(),
    "EDS": protos.valid_cluster_load_assignment(),
    "SDS": protos.valid_secret(),
}
KINDS = sorted(DECODERS)


def _top_fields(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in protos.TOP_LEVEL[kind].DESCRIPTOR.fields)


def decode_checked(kind: str, data: bytes) -> object:
    """Decode twice: nothing escapes, the result is well formed and the same both times."""
    decode = DECODERS[kind].decode
    first = decode(data)
    check_decode_result(first, _top_fields(kind))
    second = decode(data)
    assert second == first, f"{kind}: decoding the same bytes twice differs"
    return first


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(100))
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes(kind: str, data: bytes) -> None:
    decode_checked(kind, data)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(80))
@given(data=st.data())
def test_any_message(kind: str, data: st.DataObject) -> None:
    msg = data.draw(protos.any_message(protos.TOP_LEVEL[kind]))
    decode_checked(kind, msg.SerializeToString())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(60))
@given(data=st.data())
def test_perturbed_valid_message(kind: str, data: st.DataObject) -> None:
    msg = data.draw(protos.perturbed(VALID[kind]))
    decode_checked(kind, msg.SerializeToString())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(30))
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_mutated_valid_message(kind: str, data: st.DataObject, seed: int) -> None:
    msg = data.draw(VALID[kind])
    raw = msg.SerializeToString()
    rng = random.Random(seed)
    for _ in range(8):
        decode_checked(kind, mutate(raw, rng))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(40))
@given(data=st.data())
def test_valid_resource_decodes(kind: str, data: st.DataObject) -> None:
    msg = data.draw(VALID[kind])
    result = decode_checked(kind, msg.SerializeToString())
    assert result.ok, f"{kind} rejected a valid resource: {result.errors}\n{msg}"  # type: ignore[attr-defined]
    name_field = "cluster_name" if kind == "EDS" else "name"
    assert result.name == getattr(msg, name_field)  # type: ignore[attr-defined]
