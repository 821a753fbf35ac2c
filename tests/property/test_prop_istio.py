"""Properties of the embedded control plane's Istio YAML loader.

The loader (``proxyless.controlplane.istio.load.load_text``) reads files a
person edits while the control plane runs; it reports every problem as an
:class:`Issue` naming file, document, ``kind/name`` and field path, and
never raises; ``load_mesh`` raises :class:`MeshConfigError` holding the same
errors. Tested through the public loader only.

===================================  ===========================================  ========
property                             why                                          examples
===================================  ===========================================  ========
any text                             a half-saved file, a stray tab, binary junk  150
any YAML documents                   every shape a document can take (lists,      120
                                     scalars, mappings of anything)
valid ServiceEntry, VirtualService   near-valid documents reach the field checks  120
and DestinationRule with one value   of each kind; each error names this file,
replaced, removed or added           the document and, past the header, a path
a null list item (``- `` with        a half-written list; each of the seed's      every
nothing after it)                    list items replaced by null                  item
a mesh that loads translates         what the loader accepts, the translator      (in the
into resources proxyless accepts     turns into Listeners, RouteConfigurations,   above)
                                     Clusters and ClusterLoadAssignments that
                                     proxyless' own decoders accept
===================================  ===========================================  ========
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.controlplane.istio.load import LoadResult, MeshConfigError, load_mesh, load_text
from proxyless.controlplane.istio.translate import NodeProfile, Translator
from proxyless.resources import types

from .support import examples

FILE = "mesh.yaml"

SEED: list[dict[str, Any]] = [
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews.default.svc.cluster.local"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 9080, "name": "grpc", "protocol": "GRPC"}],
            "endpoints": [
                {"address": "10.0.0.1", "ports": {"grpc": 50051}, "labels": {"version": "v1"}},
                {"address": "10.0.0.2", "ports": {"grpc": 50052}, "labels": {"version": "v2"}},
            ],
        },
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "mobile",
                    "match": [
                        {"headers": {"user-agent": {"regex": ".*Mobile.*"}}},
                        {"uri": {"prefix": "/reviews.Reviews/"}},
                    ],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                    "timeout": "2s",
                    "retries": {"attempts": 2, "retryOn": "unavailable,cancelled"},
                },
                {
                    "name": "split",
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                    ],
                    "fault": {"abort": {"percentage": {"value": 1}, "grpcStatus": "UNAVAILABLE"}},
                },
            ],
        },
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {"http": {"http2MaxRequests": 100}},
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "1s",
                    "baseEjectionTime": "10s",
                    "maxEjectionPercent": 50,
                },
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {
                        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}
                    },
                },
            ],
        },
    },
]

_KEYS = st.sampled_from(
    (
        "hosts",
        "ports",
        "number",
        "name",
        "protocol",
        "endpoints",
        "address",
        "labels",
        "http",
        "match",
        "uri",
        "prefix",
        "exact",
        "regex",
        "headers",
        "route",
        "destination",
        "host",
        "subset",
        "weight",
        "timeout",
        "retries",
        "attempts",
        "perTryTimeout",
        "fault",
        "delay",
        "abort",
        "trafficPolicy",
        "loadBalancer",
        "simple",
        "consistentHash",
        "outlierDetection",
        "subsets",
        "tls",
        "mode",
    )
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.sampled_from(
        ("", "reviews", "v1", "*", "1s", "-1s", "0s", "1h", "10.0.0.1", "(", "GRPC", "TCP")
    ),
    st.text(max_size=8),
)
VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=5)), children, max_size=4),
    ),
    max_leaves=16,
)


def load_checked(text: str) -> LoadResult:
    """Load ``text``: no exception, and every issue says where it is."""
    result = load_text(text, FILE)
    for issue in result.issues:
        assert issue.severity in ("error", "warning"), issue
        assert issue.file == FILE, issue
        assert issue.message, issue
        assert str(issue).startswith(FILE), issue
    try:
        mesh = load_mesh(text, FILE)
    except MeshConfigError as exc:
        assert not result.ok and exc.errors == sorted(result.errors, key=lambda i: (i.file, i.doc))
    else:
        assert result.ok and mesh == result.mesh
    if result.ok:
        _translates(result)
    return result


def _translates(result: LoadResult) -> None:
    snapshot = Translator(result.mesh).snapshot(NodeProfile())
    for resource_type in (
        types.LISTENER,
        types.ROUTE_CONFIGURATION,
        types.CLUSTER,
        types.CLUSTER_LOAD_ASSIGNMENT,
    ):
        for name, msg in dict(snapshot.get(resource_type.type_url)).items():
            decoded = resource_type.decode(msg.SerializeToString())
            assert decoded.ok, (resource_type, name, decoded.errors)


def test_seed_is_valid() -> None:
    result = load_checked(yaml.safe_dump_all(SEED))
    assert result.ok, [str(i) for i in result.issues]


@settings(max_examples=examples(150))
@given(
    text=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
)
def test_any_text(text: str) -> None:
    load_checked(text)


@settings(max_examples=examples(120))
@given(documents=st.lists(VALUES, min_size=1, max_size=3))
def test_any_documents(documents: list[Any]) -> None:
    load_checked(yaml.safe_dump_all(documents))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_seed(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
    documents = copy.deepcopy(SEED)
    path = draw(st.sampled_from(_paths(documents)[1:]))
    parent: Any = documents
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    action = draw(st.sampled_from(("replace", "remove", "add")))
    if action == "remove":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][draw(_KEYS)] = draw(VALUES)
    elif action == "add" and isinstance(parent[last], list):
        parent[last].append(draw(VALUES))
    else:
        parent[last] = draw(VALUES)
    return documents, path


@settings(max_examples=examples(120))
@given(case=mutated_seed())
def test_mutated_valid_documents(case: tuple[list[dict[str, Any]], tuple[Any, ...]]) -> None:
    documents, _ = case
    result = load_checked(yaml.safe_dump_all(documents))
    for issue in result.errors:
        assert 0 < issue.doc <= len(documents), issue
        if issue.kind and issue.kind in ("ServiceEntry", "VirtualService", "DestinationRule"):
            # An error about a known kind names the field it is about.
            assert issue.path, str(issue)


def _null_item_cases() -> list[Any]:
    cases = []
    for path in _paths(SEED)[1:]:
        if not isinstance(path[-1], int):
            continue
        cases.append(pytest.param(path, id=".".join(map(str, path))))
    return cases


@pytest.mark.parametrize("path", _null_item_cases())
def test_null_list_item(path: tuple[Any, ...]) -> None:
    documents = copy.deepcopy(SEED)
    parent: Any = documents
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = None
    load_checked(yaml.safe_dump_all(documents))
