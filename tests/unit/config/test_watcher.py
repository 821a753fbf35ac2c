"""ConfigWatcher against a fake xDS client: which resources it watches as
the chain LDS -> RDS -> CDS (aggregate) -> EDS unfolds, and what it publishes.

The fake client implements only what the watcher uses of
:class:`~proxyless.xds_client.XdsClient`: ``watch(rtype, name, watcher)``
returning a cancel function, and ``_call_on_loop`` (run at once: the test is
the Mesh thread). Like the real client it keeps the last value of every
resource and hands it to a new watch at once, which re-enters the watcher
while it is recomputing. Resources are real protos decoded by
:mod:`proxyless.resources.types`, as the client would deliver them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxyless.config import ConfigWatcher
from proxyless.config.snapshot import XdsConfig
from proxyless.errors import (
    ClusterNotAvailable,
    ControlPlaneUnreachable,
    ResourceDoesNotExist,
    ResourceNacked,
)
from proxyless.resources.types import (
    CLUSTER,
    CLUSTER_LOAD_ASSIGNMENT,
    LISTENER,
    ROUTE_CONFIGURATION,
)
from proxyless.testing import resources as r

LDS, RDS, CDS, EDS = "LDS", "RDS", "CDS", "EDS"
_TYPES = {LDS: LISTENER, RDS: ROUTE_CONFIGURATION, CDS: CLUSTER, EDS: CLUSTER_LOAD_ASSIGNMENT}

Key = tuple[str, str]


class FakeXdsClient:
    """Watches by (type, name); delivers what the test sends, caches values."""

    def __init__(self) -> None:
        self.watchers: dict[Key, list[Any]] = {}
        self.started: list[Key] = []
        self.cancelled: list[Key] = []
        self.cache: dict[Key, Any] = {}

    # -- what ConfigWatcher uses ---------------------------------------------------------
    def watch(self, rtype: Any, name: str, watcher: Any) -> Callable[[], None]:
        key = (rtype.short_name, name)
        self.watchers.setdefault(key, []).append(watcher)
        self.started.append(key)
        if key in self.cache:
            watcher.on_changed(self.cache[key])

        def cancel() -> None:
            self.watchers[key].remove(watcher)
            self.cancelled.append(key)

        return cancel

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        fn(*args)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """The real client runs ``fn`` after the response being handled; each
        delivery here is a response of its own, so run it now."""
        fn()

    # -- what the test does ---------------------------------------------------------------
    @property
    def watched(self) -> set[Key]:
        return {key for key, ws in self.watchers.items() if ws}

    def changed(self, kind: str, proto: Any) -> None:
        result = _TYPES[kind].decode(proto.SerializeToString())
        assert result.ok, result.errors
        assert result.name is not None
        key = (kind, result.name)
        self.cache[key] = result.value
        for w in list(self.watchers.get(key, ())):
            w.on_changed(result.value)

    def resource_error(self, kind: str, name: str, error: Exception) -> None:
        self.cache.pop((kind, name), None)
        for w in list(self.watchers.get((kind, name), ())):
            w.on_resource_error(error)

    def ambient_error(self, kind: str, name: str, error: Exception) -> None:
        for w in list(self.watchers.get((kind, name), ())):
            w.on_ambient_error(error)


class Published(list[XdsConfig]):
    """Every snapshot a listener was given, in order."""

    @property
    def last(self) -> XdsConfig:
        return self[-1]


def _watcher(client: FakeXdsClient, name: str = "svc") -> tuple[ConfigWatcher, Published]:
    published = Published()
    watcher = ConfigWatcher(client, name, on_update=published.append)  # type: ignore[arg-type]
    return watcher, published


def _serve(
    client: FakeXdsClient,
    *,
    routes: list[Any] | None = None,
    clusters: dict[str, Any] | None = None,
    eds: dict[str, list[str]] | None = None,
) -> None:
    """Send a whole chain: listener svc -> rc -> clusters -> endpoints."""
    client.changed(LDS, r.listener("svc", "rc"))
    client.changed(RDS, r.route_config("rc", "svc", routes or [r.route(cluster="a")]))
    for proto in (clusters or {"a": r.cluster("a")}).values():
        client.changed(CDS, proto)
    for name, addresses in (eds or {"a": ["10.0.0.1:80"]}).items():
        client.changed(EDS, r.endpoints(name, addresses))


# -- the chain -----------------------------------------------------------------------------
def test_the_chain_is_followed_and_published_once_complete() -> None:
    client = FakeXdsClient()
    watcher, published = _watcher(client)
    assert client.watched == {(LDS, "svc")}

    client.changed(LDS, r.listener("svc", "rc"))
    assert client.watched == {(LDS, "svc"), (RDS, "rc")}
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="a")]))
    assert client.watched == {(LDS, "svc"), (RDS, "rc"), (CDS, "a")}
    client.changed(CDS, r.cluster("a"))
    assert client.watched == {(LDS, "svc"), (RDS, "rc"), (CDS, "a"), (EDS, "a")}
    assert published == [] and watcher.snapshot is None
    assert watcher.wait(0) is None

    client.changed(EDS, r.endpoints("a", ["10.0.0.1:80"]))
    assert len(published) == 1
    snap = published.last
    assert watcher.snapshot is snap and watcher.wait(0) is snap
    assert snap.usable and snap.version == 1 and snap.error is None
    assert snap.listener is not None and snap.listener.name == "svc"
    assert snap.route_config is not None and snap.route_config.name == "rc"
    assert list(snap.clusters) == ["a"]
    cc = snap.clusters["a"]
    assert cc.usable and cc.cluster is not None and cc.cluster.name == "a"
    assert cc.endpoints is not None and cc.endpoints.cluster_name == "a"
    assert repr(watcher) == "ConfigWatcher('svc', ok)"


@pytest.mark.parametrize(
    ("listener", "cluster", "watched"),
    [
        pytest.param(
            r.listener("svc", "rc"),
            r.cluster("a"),
            {(LDS, "svc"), (RDS, "rc"), (CDS, "a"), (EDS, "a")},
            id="rds",
        ),
        pytest.param(
            r.listener("svc", inline=r.route_config("inline", "svc", [r.route(cluster="a")])),
            r.cluster("a"),
            {(LDS, "svc"), (CDS, "a"), (EDS, "a")},
            id="inline-route-config",
        ),
        pytest.param(
            r.listener("svc", "rc"),
            r.cluster("a", eds_service_name="a-eds"),
            {(LDS, "svc"), (RDS, "rc"), (CDS, "a"), (EDS, "a-eds")},
            id="eds-service-name",
        ),
    ],
)
def test_what_is_watched(listener: Any, cluster: Any, watched: set[Key]) -> None:
    client = FakeXdsClient()
    # Everything is cached before the watcher starts: each watch gets its
    # value at once, re-entering the watcher mid-recompute.
    client.changed(LDS, listener)
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="a")]))
    client.changed(CDS, cluster)
    client.changed(EDS, r.endpoints("a", ["10.0.0.1:80"]))
    client.changed(EDS, r.endpoints("a-eds", ["10.0.0.2:80"]))
    _, published = _watcher(client)
    assert client.watched == watched
    assert len(published) == 1 and published.last.usable
    endpoints = published.last.clusters["a"].endpoints
    assert endpoints is not None
    want = "a-eds" if cluster.eds_cluster_config.service_name else "a"
    assert endpoints.cluster_name == want


# -- changes ---------------------------------------------------------------------------------
def test_a_route_config_change_republishes() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    _serve(client)
    first = published.last
    client.changed(RDS, r.route_config("rc", ["svc", "svc:80"], [r.route(cluster="a")]))
    assert len(published) == 2
    second = published.last
    assert second.version == 2 and second.route_config is not first.route_config
    assert second.route_config is not None
    assert second.route_config.virtual_hosts[0].domains == ("svc", "svc:80")
    assert second.clusters["a"] == first.clusters["a"]


def test_a_dropped_cluster_is_unsubscribed_and_a_new_one_waited_for() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    _serve(client)
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="b")]))
    # b is not complete yet: the old snapshot stays in force, but a, which the
    # new routes do not reach, is unsubscribed at once.
    assert len(published) == 1 and list(published.last.clusters) == ["a"]
    assert client.watched == {(LDS, "svc"), (RDS, "rc"), (CDS, "b")}
    assert (CDS, "a") in client.cancelled and (EDS, "a") in client.cancelled
    client.changed(CDS, r.cluster("b"))
    assert len(published) == 1
    client.changed(EDS, r.endpoints("b", ["10.0.0.9:80"]))
    assert len(published) == 2 and list(published.last.clusters) == ["b"]
    assert client.watched == {(LDS, "svc"), (RDS, "rc"), (CDS, "b"), (EDS, "b")}


def test_a_listener_naming_another_route_config_moves_the_rds_watch() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    _serve(client)
    client.changed(LDS, r.listener("svc", "rc2"))
    assert (RDS, "rc") in client.cancelled and (RDS, "rc2") in client.watched
    assert len(published) == 1
    client.changed(RDS, r.route_config("rc2", "svc", [r.route(cluster="a")]))
    assert len(published) == 2
    assert published.last.route_config is not None
    assert published.last.route_config.name == "rc2"


def test_mirror_and_weighted_clusters_are_followed() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    route = r.route(weighted={"a": 90, "b": 10})
    route.route.request_mirror_policies.add(cluster="shadow")
    clusters = {n: r.cluster(n) for n in ("a", "b", "shadow")}
    _serve(
        client,
        routes=[route],
        clusters=clusters,
        eds={n: ["10.0.0.1:80"] for n in ("a", "b", "shadow")},
    )
    assert len(published) == 1
    assert list(published.last.clusters) == ["a", "b", "shadow"]


# -- aggregate clusters -----------------------------------------------------------------------
def test_an_aggregate_clusters_children_are_followed() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    clusters = {
        "agg": r.cluster("agg", aggregate=["primary", "secondary"]),
        "primary": r.cluster("primary"),
        "secondary": r.cluster("secondary"),
    }
    client.changed(LDS, r.listener("svc", "rc"))
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="agg")]))
    client.changed(CDS, clusters["agg"])
    assert {(CDS, "primary"), (CDS, "secondary")} <= client.watched
    assert (EDS, "agg") not in client.watched  # an aggregate has no endpoints
    client.changed(CDS, clusters["primary"])
    client.changed(CDS, clusters["secondary"])
    client.changed(EDS, r.endpoints("primary", ["10.0.0.1:80"]))
    assert published == []
    client.changed(EDS, r.endpoints("secondary", ["10.0.0.2:80"]))
    assert len(published) == 1
    snap = published.last
    agg = snap.clusters["agg"]
    assert agg.usable and agg.children == ("primary", "secondary") and agg.endpoints is None
    assert snap.clusters["primary"].usable and snap.clusters["secondary"].usable

    # The aggregate drops a child: its watches go.
    client.changed(CDS, r.cluster("agg", aggregate=["primary"]))
    assert len(published) == 2 and published.last.clusters["agg"].children == ("primary",)
    assert "secondary" not in published.last.clusters
    assert (CDS, "secondary") not in client.watched and (EDS, "secondary") not in client.watched


@pytest.mark.parametrize(
    ("clusters", "broken", "message"),
    [
        pytest.param(
            {"agg": ["agg2"], "agg2": ["agg"]},
            "agg",
            "aggregate cluster loop: agg -> agg2 -> agg",
            id="loop",
        ),
        pytest.param(
            {"agg": ["agg2"], "agg2": ["agg"]},
            "agg2",
            "aggregate cluster 'agg2' has no usable child cluster",
            id="inside-a-loop",
        ),
        pytest.param(
            {"agg": ["gone"]},
            "agg",
            "aggregate cluster 'agg' has no usable child cluster",
            id="no-usable-child",
        ),
    ],
)
def test_aggregate_cluster_errors(
    clusters: dict[str, list[str]], broken: str, message: str
) -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    client.changed(LDS, r.listener("svc", "rc"))
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="agg")]))
    for name, children in clusters.items():
        client.changed(CDS, r.cluster(name, aggregate=children))
    client.resource_error(CDS, "gone", ResourceDoesNotExist("CDS 'gone' does not exist"))
    assert len(published) == 1
    snap = published.last
    assert snap.usable  # the listener and routes are fine; the cluster is not
    error = snap.clusters[broken].error
    assert isinstance(error, ClusterNotAvailable) and message in str(error)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name", "error", "wrapped"),
    [
        pytest.param(
            CDS,
            "b",
            ResourceDoesNotExist("CDS resource 'b' does not exist"),
            "cluster 'b': CDS resource 'b' does not exist",
            id="cluster-does-not-exist",
        ),
        pytest.param(
            EDS,
            "b",
            ResourceNacked("EDS 'b' rejected"),
            "cluster 'b': EDS 'b' rejected",
            id="endpoints-rejected",
        ),
        pytest.param(
            CDS, "b", ValueError("not an xDS error"), "not an xDS error", id="foreign-error-as-is"
        ),
    ],
)
def test_a_cluster_resource_error_marks_only_that_cluster(
    kind: str, name: str, error: Exception, wrapped: str
) -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    _serve(
        client,
        routes=[r.route(weighted={"a": 50, "b": 50})],
        clusters={"a": r.cluster("a"), "b": r.cluster("b")},
        eds={"a": ["10.0.0.1:80"], "b": ["10.0.0.2:80"]},
    )
    assert len(published) == 1
    client.resource_error(kind, name, error)
    assert len(published) == 2
    snap = published.last
    assert snap.usable
    assert snap.clusters["a"].usable
    b = snap.clusters["b"]
    assert not b.usable and str(b.error) == wrapped
    if isinstance(error, ResourceDoesNotExist | ResourceNacked):
        assert isinstance(b.error, ClusterNotAvailable) and b.error.__cause__ is error
    else:
        assert b.error is error
    # The value comes back: the cluster is usable again.
    client.changed(CDS, r.cluster("b"))
    client.changed(EDS, r.endpoints("b", ["10.0.0.2:80"]))
    assert published.last.clusters["b"].usable


def test_a_cluster_error_before_any_value_still_completes_the_chain() -> None:
    client = FakeXdsClient()
    _, published = _watcher(client)
    client.changed(LDS, r.listener("svc", "rc"))
    client.changed(RDS, r.route_config("rc", "svc", [r.route(weighted={"a": 1, "b": 1})]))
    client.changed(CDS, r.cluster("a"))
    client.changed(EDS, r.endpoints("a", ["10.0.0.1:80"]))
    assert published == []  # b is neither here nor failed
    client.resource_error(CDS, "b", ResourceDoesNotExist("CDS 'b' does not exist"))
    assert len(published) == 1
    assert published.last.clusters["a"].usable and not published.last.clusters["b"].usable


@pytest.mark.parametrize(
    ("kind", "name", "watched"),
    [
        pytest.param(LDS, "svc", {(LDS, "svc")}, id="listener"),
        pytest.param(RDS, "rc", {(LDS, "svc"), (RDS, "rc")}, id="route-config"),
    ],
)
def test_a_listener_or_route_config_error_replaces_the_snapshot(
    kind: str, name: str, watched: set[Key]
) -> None:
    client = FakeXdsClient()
    watcher, published = _watcher(client)
    _serve(client)
    error = ResourceDoesNotExist(f"{kind} {name!r} does not exist")
    client.resource_error(kind, name, error)
    assert len(published) == 2
    snap = published.last
    assert not snap.usable and snap.error is error and snap.route_config is None
    assert snap.clusters == {}
    assert client.watched == watched  # nothing below the failed resource is watched
    assert repr(watcher) == f"ConfigWatcher('svc', error: {error})"
    # Recovery: the resource comes back and the chain is complete again.
    if kind == LDS:
        client.changed(LDS, r.listener("svc", "rc"))
    else:
        client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster="a")]))
    assert len(published) == 3 and published.last.usable


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        pytest.param(LDS, "svc", id="listener"),
        pytest.param(RDS, "rc", id="route-config"),
        pytest.param(CDS, "a", id="cluster"),
        pytest.param(EDS, "a", id="endpoints"),
    ],
)
def test_ambient_errors_keep_the_last_snapshot(
    kind: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeXdsClient()
    watcher, published = _watcher(client)
    _serve(client)
    snap = watcher.snapshot
    with caplog.at_level("DEBUG", logger="proxyless"):
        client.ambient_error(kind, name, ControlPlaneUnreachable("xDS stream broke"))
    assert watcher.snapshot is snap and len(published) == 1
    # Logged at debug only: the xDS client logs one warning for all resources.
    (record,) = [r for r in caplog.records if "xDS stream broke" in r.getMessage()]
    assert record.levelname == "DEBUG"


# -- listeners and close --------------------------------------------------------------------
def test_listeners_get_every_snapshot_and_a_late_one_the_current() -> None:
    client = FakeXdsClient()
    watcher, published = _watcher(client)
    early = Published()
    watcher.add_listener(early.append)
    assert early == []  # nothing to deliver yet

    def broken(_: XdsConfig) -> None:
        raise RuntimeError("listener bug")

    watcher.add_listener(broken)
    _serve(client)
    late = Published()
    watcher.add_listener(late.append)
    assert late == [watcher.snapshot]
    client.changed(RDS, r.route_config("rc", "svc2", [r.route(cluster="a")]))
    # A failing listener does not stop the ones after it.
    assert [s.version for s in published] == [1, 2]
    assert [s.version for s in early] == [1, 2]
    assert [s.version for s in late] == [1, 2]


def test_a_change_during_publication_follows_it_in_order() -> None:
    """A listener whose work delivers an update (on the Mesh thread, at
    once) does not make later listeners see the newer snapshot first."""
    client = FakeXdsClient()
    watcher, first = _watcher(client)
    later = Published()

    def pushing(snap: XdsConfig) -> None:
        if snap.version == 1:
            client.changed(RDS, r.route_config("rc", "svc2", [r.route(cluster="a")]))

    watcher.add_listener(pushing)
    watcher.add_listener(later.append)
    _serve(client)
    assert [s.version for s in first] == [1, 2]
    assert [s.version for s in later] == [1, 2]
    assert later.last is watcher.snapshot


def test_close_unsubscribes_everything() -> None:
    client = FakeXdsClient()
    watcher, published = _watcher(client)
    clusters = {
        "agg": r.cluster("agg", aggregate=["a"]),
        "a": r.cluster("a"),
    }
    _serve(client, routes=[r.route(cluster="agg")], clusters=clusters)
    assert client.watched == {(LDS, "svc"), (RDS, "rc"), (CDS, "agg"), (CDS, "a"), (EDS, "a")}
    watcher.close()
    assert client.watched == set()
    assert sorted(client.cancelled) == sorted(
        [(LDS, "svc"), (RDS, "rc"), (CDS, "agg"), (CDS, "a"), (EDS, "a")]
    )
    watcher.close()  # idempotent
    assert len(client.cancelled) == 5
    client.changed(LDS, r.listener("svc", "rc"))
    assert len(published) == 1


def test_a_watcher_closed_before_it_starts_watches_nothing() -> None:
    class Deferred(FakeXdsClient):
        def __init__(self) -> None:
            super().__init__()
            self.queued: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

        def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
            self.queued.append((fn, args))

    client = Deferred()
    watcher, _ = _watcher(client)
    watcher.close()
    for fn, args in client.queued:
        fn(*args)
    assert client.started == []


def test_one_response_of_many_clusters_is_walked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The updates of one xDS response are applied in one pass over the
    chain, after the response, not one pass per resource (N clusters would
    cost N walks of N clusters)."""

    class Deferring(FakeXdsClient):
        def __init__(self) -> None:
            super().__init__()
            self.queued: list[Callable[[], None]] = []

        def call_soon(self, fn: Callable[[], None]) -> None:
            self.queued.append(fn)

        def end_of_response(self) -> None:
            while self.queued:
                self.queued.pop(0)()

    passes = 0
    original = ConfigWatcher._recompute

    def counting(self: ConfigWatcher) -> Any:
        nonlocal passes
        passes += 1
        return original(self)

    monkeypatch.setattr(ConfigWatcher, "_recompute", counting)
    names = [f"c{i}" for i in range(50)]
    client = Deferring()
    _, published = _watcher(client)
    client.changed(LDS, r.listener("svc", "rc"))
    client.end_of_response()
    client.changed(RDS, r.route_config("rc", "svc", [r.route(cluster=n) for n in names]))
    client.end_of_response()
    passes = 0
    for n in names:  # one CDS response
        client.changed(CDS, r.cluster(n))
    assert passes == 0  # nothing walked while the response is handled
    client.end_of_response()
    assert passes <= 2
    passes = 0
    for n in names:  # one EDS response
        client.changed(EDS, r.endpoints(n, ["10.0.0.1:80"]))
    client.end_of_response()
    assert passes <= 2
    assert len(published) == 1 and set(published.last.clusters) == set(names)
