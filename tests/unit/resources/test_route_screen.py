"""Plain virtual hosts are validated ahead and built on first use
(``proxyless.resources.parse.route_bulk``, ``route_screen``); the property tests in
``tests/property/test_prop_route_screen.py`` check that the results equal the
general parser's."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.route.v3 import route_pb2

from proxyless.config.watcher import clusters_of_route_config
from proxyless.resources.model.route import LazyRoutes, RouteAction, VirtualHost, plain_virtual_host
from proxyless.resources.parse import route_bulk
from proxyless.resources.parse.common import LastByName
from proxyless.resources.parse.route import decode_route_configuration
from proxyless.resources.parse.route_screen import plain_virtual_hosts, virtual_host_bytes


def _config(decorated: int | None = None) -> route_pb2.RouteConfiguration:
    cfg = route_pb2.RouteConfiguration(name="rc")
    for i in range(3):
        vh = cfg.virtual_hosts.add(name=f"vh{i}", domains=[f"svc-{i}.ns", f"svc-{i}.ns:80"])
        for j, prefix in enumerate(("/a", "/")):
            r = vh.routes.add(name=f"r{j}")
            r.match.prefix = prefix
            r.route.cluster = f"c{i}-{j}"
            r.route.timeout.seconds = 5
            r.route.retry_policy.retry_on = "unavailable"
            r.route.retry_policy.num_retries.value = 2
            if i == decorated and j == 1:
                r.decorator.operation = "op"
    return cfg


def test_plain_virtual_hosts_are_built_on_first_use() -> None:
    result = decode_route_configuration(_config().SerializeToString())
    assert result.errors == ()
    rc = result.value
    lazy = [vh.routes for vh in rc.virtual_hosts]
    assert all(isinstance(r, LazyRoutes) and not r.built for r in lazy)
    # What the config watcher needs is known without building anything.
    assert clusters_of_route_config(rc) == ["c0-0", "c0-1", "c1-0", "c1-1", "c2-0", "c2-1"]
    assert not any(r.built for r in lazy if isinstance(r, LazyRoutes))
    assert len(rc.virtual_hosts[1].routes) == 2
    route = rc.virtual_hosts[1].routes[1]
    assert isinstance(route.action, RouteAction)
    assert (route.match.path, route.action.cluster, route.action.timeout) == ("/", "c1-1", 5.0)
    assert route.action.retry_policy is not None
    assert route.action.retry_policy.num_retries == 2
    assert [isinstance(r, LazyRoutes) and r.built for r in lazy] == [False, True, False]
    general = decode_route_configuration(_config().SerializeToString(), screen=False).value
    assert rc == general


def test_a_field_that_is_not_plain_goes_the_general_way() -> None:
    data = _config(decorated=2).SerializeToString()
    assert plain_virtual_hosts(data, virtual_host_bytes(data) or []) == [True, True, False]
    rc = decode_route_configuration(data).value
    assert rc.ignored_fields == ("virtual_hosts[2].routes[1].decorator",)
    assert not isinstance(rc.virtual_hosts[2].routes, LazyRoutes)


def test_the_plain_virtual_hosts_of_a_mixed_configuration_are_validated_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One virtual host that is not plain: the others still go all at once
    (``route_bulk``), not one by one."""

    def one_by_one(*args: object) -> None:
        raise AssertionError("screened one by one")

    monkeypatch.setattr(route_bulk, "screen_virtual_host", one_by_one)
    data = _named(_config(decorated=1), "mixed-bulk")
    rc = decode_route_configuration(data).value
    assert [isinstance(vh.routes, LazyRoutes) for vh in rc.virtual_hosts] == [True, False, True]
    assert rc == decode_route_configuration(data, screen=False).value


def test_a_bad_value_in_a_plain_virtual_host_is_reported_by_path() -> None:
    cfg = _config()
    cfg.virtual_hosts[1].routes[0].route.timeout.nanos = -1
    result = decode_route_configuration(cfg.SerializeToString())
    assert result.value is None
    assert result.errors == (
        "virtual_hosts[1].routes[0].route.timeout: duration must not be negative",
    )


def _named(cfg: route_pb2.RouteConfiguration, name: str) -> bytes:
    cfg.name = name
    return cfg.SerializeToString()


def test_an_update_reuses_the_virtual_hosts_that_did_not_change() -> None:
    first = decode_route_configuration(_named(_config(), "reuse")).value
    built = first.virtual_hosts[0].routes[0]  # built before the update
    changed = _config()
    changed.virtual_hosts[1].routes[0].route.cluster = "moved"
    second = decode_route_configuration(_named(changed, "reuse")).value
    same, new, other = second.virtual_hosts
    assert same is first.virtual_hosts[0] and other is first.virtual_hosts[2]
    assert new is not first.virtual_hosts[1]
    assert new.routes[0].action.cluster == "moved"
    assert same.routes[0] is built  # what was built stays built
    assert isinstance(other.routes, LazyRoutes) and not other.routes.built
    assert clusters_of_route_config(second)[2:4] == ["moved", "c1-1"]
    assert second == decode_route_configuration(_named(changed, "reuse"), screen=False).value


def test_reuse_finds_virtual_hosts_by_their_bytes_wherever_they_are() -> None:
    first = decode_route_configuration(_named(_config(), "insert")).value
    grown = _config()
    extra = route_pb2.RouteConfiguration(name="insert")
    vh = extra.virtual_hosts.add(name="new", domains=["new.ns"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = "n"
    extra.virtual_hosts.extend(reversed(grown.virtual_hosts))
    second = decode_route_configuration(extra.SerializeToString()).value
    assert [vh.name for vh in second.virtual_hosts] == ["new", "vh2", "vh1", "vh0"]
    assert all(
        a is b for a, b in zip(second.virtual_hosts[1:], reversed(first.virtual_hosts), strict=True)
    )


def test_reuse_also_serves_a_configuration_validated_host_by_host() -> None:
    """One virtual host that is not plain sends the configuration the mixed
    way; the plain ones are still reused."""
    first = decode_route_configuration(_named(_config(), "mixed")).value
    second = decode_route_configuration(_named(_config(decorated=2), "mixed")).value
    assert second.virtual_hosts[0] is first.virtual_hosts[0]
    assert second.virtual_hosts[1] is first.virtual_hosts[1]
    assert not isinstance(second.virtual_hosts[2].routes, LazyRoutes)


def test_lazy_routes_keep_the_bytes_of_their_virtual_host_only() -> None:
    data = _named(_config(), "bytes")
    rc = decode_route_configuration(data).value
    sources = virtual_host_bytes(data)
    assert [vh.routes.source for vh in rc.virtual_hosts] == sources
    assert all(type(s) is bytes for s in sources)


def test_the_quick_virtual_host_constructor_sets_every_field() -> None:
    routes = LazyRoutes(lambda source: (), ("c",), b"x")
    quick = plain_virtual_host("vh", ("a.b",), routes, True, False)
    made = VirtualHost(
        name="vh", domains=("a.b",), routes=routes, include_request_attempt_count=True
    )
    for f in dataclasses.fields(VirtualHost):  # a field added later must be set too
        assert getattr(quick, f.name) == getattr(made, f.name), f.name
    assert quick == made and hash(quick.name) == hash(made.name)


def test_last_by_name_keeps_the_most_recent_names() -> None:
    last: LastByName[int] = LastByName(2)
    last.put("a", 1)
    last.put("b", 2)
    last.put("a", 3)  # a is now the most recent
    last.put("c", 4)  # b goes
    assert (last.get("a"), last.get("b"), last.get("c")) == (3, None, 4)
    last.put("a", None)  # forgotten
    assert last.get("a") is None and last.get("c") == 4
