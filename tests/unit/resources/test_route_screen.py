"""Plain virtual hosts are validated ahead and built on first use
(``proxyless.resources.parse.route_screen``); the property tests in
``tests/property/test_prop_route_screen.py`` check that the results equal the
general parser's."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from proxyless.config.watcher import clusters_of_route_config
from proxyless.resources.model.route import LazyRoutes, RouteAction
from proxyless.resources.parse.route import decode_route_configuration
from proxyless.resources.parse.route_screen import plain_virtual_hosts


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
    msg = route_pb2.RouteConfiguration.FromString(data)
    assert plain_virtual_hosts(data, msg) == [True, True, False]
    rc = decode_route_configuration(data).value
    assert rc.ignored_fields == ("virtual_hosts[2].routes[1].decorator",)
    assert not isinstance(rc.virtual_hosts[2].routes, LazyRoutes)


def test_a_bad_value_in_a_plain_virtual_host_is_reported_by_path() -> None:
    cfg = _config()
    cfg.virtual_hosts[1].routes[0].route.timeout.nanos = -1
    result = decode_route_configuration(cfg.SerializeToString())
    assert result.value is None
    assert result.errors == (
        "virtual_hosts[1].routes[0].route.timeout: duration must not be negative",
    )
