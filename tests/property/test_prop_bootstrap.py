"""Properties of the bootstrap loader (``proxyless.bootstrap.load_bootstrap``).

The bootstrap is written by people and by generators (istio-agent, Traffic
Director's); whatever it holds, loading gives a :class:`Bootstrap` or a
:class:`BootstrapError` naming the source and the JSON path, never another
exception.

==================================  ==============================================  ========
property                            why                                             examples
==================================  ==============================================  ========
any JSON value, as a dict or text   the loader walks documents of any shape         150
any text as inline JSON             ``GRPC_XDS_BOOTSTRAP_CONFIG`` is free text      100
a valid bootstrap with one value    near-valid documents reach every check; the     200
replaced, removed or added          error's path lies inside the document and
                                    starts with the top-level key that was changed
nesting at any depth                a document nested deeper than Python's          30
                                    recursion limit is an error, not a crash
dict and JSON text agree            a dict and its JSON text give the same          (in the
                                    Bootstrap, or the same error at the same path   above)
==================================  ==============================================  ========
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless.bootstrap import Bootstrap, load_bootstrap
from proxyless.errors import BootstrapError

from .support import examples

_KEYS = st.sampled_from(
    (
        "xds_servers",
        "server_uri",
        "channel_creds",
        "type",
        "config",
        "server_features",
        "node",
        "id",
        "cluster",
        "locality",
        "zone",
        "metadata",
        "certificate_providers",
        "plugin_name",
        "certificate_file",
        "private_key_file",
        "ca_certificate_file",
        "refresh_interval",
        "authorities",
        "client_listener_resource_name_template",
        "client_default_listener_resource_name_template",
        "server_listener_resource_name_template",
    )
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(("", "insecure", "tls", "xdstp://a/x/%s", "xdstp:", "600s", "0s", "x:1")),
    st.text(max_size=10),
)
JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=6)), children, max_size=4),
    ),
    max_leaves=20,
)

VALID: dict[str, Any] = {
    "xds_servers": [
        {
            "server_uri": "istiod.istio-system.svc:15010",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ],
    "node": {
        "id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
        "locality": {"region": "r", "zone": "z"},
        "metadata": {"GENERATOR": "grpc", "LABELS": {"app": "reviews"}},
    },
    "certificate_providers": {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": "/etc/certs/cert.pem",
                "private_key_file": "/etc/certs/key.pem",
                "ca_certificate_file": "/etc/certs/root.pem",
                "refresh_interval": "900s",
            },
        }
    },
    "authorities": {
        "mesh": {
            "client_listener_resource_name_template": "xdstp://mesh/envoy.config.listener.v3.Listener/%s",
            "xds_servers": [{"server_uri": "mesh:443", "channel_creds": [{"type": "tls"}]}],
        }
    },
    "client_default_listener_resource_name_template": "xdstp://mesh/envoy.config.listener.v3.Listener/%s",
}


def load(document: Any, *, as_text: bool) -> Bootstrap | BootstrapError:
    """Load ``document`` from a dict or from JSON text; only our error escapes."""
    try:
        if as_text:
            return load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(document)})
        return load_bootstrap(document, environ={})
    except BootstrapError as exc:
        assert exc.source == ("$GRPC_XDS_BOOTSTRAP_CONFIG" if as_text else "<dict>")
        assert exc.problem
        return exc


def load_both_ways(document: Any) -> Bootstrap | BootstrapError:
    """Load ``document`` as JSON text and, if it is an object, as a dict: the
    same outcome both ways, and the same again."""
    first = load(document, as_text=True)
    assert repr(load(document, as_text=True)) == repr(first)
    if not isinstance(document, dict):
        assert isinstance(first, BootstrapError)
        return first
    from_dict = load(document, as_text=False)
    if isinstance(first, Bootstrap):
        assert isinstance(from_dict, Bootstrap), from_dict
        assert from_dict.xds_servers == first.xds_servers
        assert from_dict.node == first.node
        assert from_dict.authorities == first.authorities
        return from_dict
    assert isinstance(from_dict, BootstrapError), from_dict
    assert (from_dict.field, from_dict.problem) == (first.field, first.problem)
    return from_dict


@settings(max_examples=examples(150))
@given(document=JSON)
def test_any_json_value(document: Any) -> None:
    load_both_ways(document)


@settings(max_examples=examples(100))
@given(text=st.one_of(st.text(max_size=40), JSON.map(json.dumps).map(lambda s: s[: len(s) // 2])))
def test_any_inline_text(text: str) -> None:
    try:
        load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": text})
    except BootstrapError as exc:
        # An empty variable counts as unset (gRPC does the same).
        assert exc.source == ("$GRPC_XDS_BOOTSTRAP_CONFIG" if text else "<environment>")


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
def mutated_valid(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, ...]]:
    document = json.loads(json.dumps(VALID))
    path = draw(st.sampled_from(_paths(document)[1:]))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    action = draw(st.sampled_from(("replace", "remove", "add")))
    if action == "remove":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][draw(_KEYS)] = draw(JSON)
    elif action == "add" and isinstance(parent[last], list):
        parent[last].append(draw(JSON))
    else:
        parent[last] = draw(JSON)
    return document, path


@settings(max_examples=examples(200))
@given(case=mutated_valid())
def test_mutated_valid_bootstrap(case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    document, changed = case
    outcome = load_both_ways(document)
    if isinstance(outcome, BootstrapError):
        # The problem lies where the document was changed, or (for a
        # federation name) in the template that names the changed authority.
        head = outcome.field.split(".")[0].split("[")[0]
        assert head in (changed[0], "client_default_listener_resource_name_template"), (
            outcome,
            changed,
        )


@settings(max_examples=examples(30))
@given(depth=st.integers(1, 3000), as_text=st.booleans())
def test_nesting_at_any_depth(depth: int, as_text: bool) -> None:
    nested: Any = []
    for _ in range(depth - 1):
        nested = [nested]
    document = json.loads(json.dumps(VALID))
    document["node"]["metadata"]["deep"] = nested
    try:
        if as_text:
            text = json.dumps(document) if depth < 900 else _deep_text(document, depth)
            load_bootstrap(environ={"GRPC_XDS_BOOTSTRAP_CONFIG": text})
        else:
            load_bootstrap(document, environ={})
    except BootstrapError as exc:
        assert exc.field.startswith("node.metadata") or not exc.field, exc


def _deep_text(document: dict[str, Any], depth: int) -> str:
    # json.dumps itself recurses; build the deep part by hand.
    document["node"]["metadata"]["deep"] = "@@"
    return json.dumps(document).replace('"@@"', "[" * depth + "]" * depth)
