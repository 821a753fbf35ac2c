"""The RBAC engine (gRFC A41) as a pure function: one table of policies and
calls (peer SANs, path, headers, addresses), each case naming the verdict."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2 as cfg
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from proxyless.grpc._rbac import RbacRequest, authorize
from proxyless.resources.model.filters import RbacFilterConfig
from proxyless.resources.parse.common import Ctx
from proxyless.resources.parse.filters import filter_config
from proxyless.security.peer import PeerCertificate

ME = "spiffe://cluster.local/ns/default/sa/productpage"
OTHER = "spiffe://cluster.local/ns/other/sa/x"
PATH = "/reviews.Reviews/Get"


def _s(**kw: Any) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(**kw)


def _cidr(prefix: str, length: int) -> address_pb2.CidrRange:
    return address_pb2.CidrRange(
        address_prefix=prefix, prefix_len=wrappers_pb2.UInt32Value(value=length)
    )


def principal(sid: str | None = None, **kw: Any) -> cfg.Principal:
    if sid is not None:
        return cfg.Principal(
            authenticated=cfg.Principal.Authenticated(principal_name=_s(exact=sid))
        )
    return cfg.Principal(**kw)


def perm(**kw: Any) -> cfg.Permission:
    return cfg.Permission(**kw)


ANY_P = principal(any=True)
ANY_R = perm(any=True)


def policy(perms: list[cfg.Permission], principals: list[cfg.Principal]) -> cfg.Policy:
    return cfg.Policy(permissions=perms, principals=principals)


def rbac(action: str, **policies: cfg.Policy) -> tuple[str, RbacFilterConfig]:
    msg = rbac_pb2.RBAC(rules=cfg.RBAC(action=getattr(cfg.RBAC, action), policies=policies))
    packed = any_pb2.Any()
    packed.Pack(msg)
    ctx = Ctx()
    parsed = filter_config(ctx, "f", packed, top_level=True)
    assert not ctx.errors, ctx.errors
    assert isinstance(parsed, RbacFilterConfig)
    return f"rbac.{action}", parsed


def req(
    peer: str | None = ME,
    path: str = PATH,
    headers: dict[str, str] | None = None,
    dns: tuple[str, ...] = (),
    subject: str = "",
    peer_ip: str = "10.0.0.1",
    local_port: int = 8080,
) -> RbacRequest:
    cert = None
    if peer is not None or dns or subject:
        uri = (peer,) if peer else ()
        cert = PeerCertificate(spiffe_id=peer, uri=uri, dns=dns, subject=subject)
    return RbacRequest(
        path=path,
        headers=headers or {},
        peer_ip=peer_ip,
        local_ip="10.0.0.9",
        local_port=local_port,
        peer=cert,
    )


CASES = [
    # (filters, request, expected substring of the denial or None)
    ([rbac("ALLOW", a=policy([ANY_R], [principal(ME)]))], req(), None),
    ([rbac("ALLOW", a=policy([ANY_R], [principal(ME)]))], req(OTHER), "no ALLOW policy matched"),
    ([rbac("ALLOW", a=policy([ANY_R], [principal(ME)]))], req(None), "no ALLOW policy matched"),
    ([rbac("ALLOW")], req(), "no ALLOW policy matched"),
    (
        [rbac("ALLOW", web_only=policy([ANY_R], [principal(ME)]))],
        req(OTHER),
        "no ALLOW policy matched (policies: 'web_only')",
    ),
    ([rbac("ALLOW")], req(), "(policies: none configured)"),
    ([rbac("DENY")], req(), None),
    ([rbac("DENY", bad=policy([ANY_R], [principal(OTHER)]))], req(OTHER), "'bad'"),
    ([rbac("DENY", bad=policy([ANY_R], [principal(OTHER)]))], req(), None),
    (
        [
            rbac("DENY", d=policy([ANY_R], [principal(OTHER)])),
            rbac("ALLOW", a=policy([ANY_R], [ANY_P])),
        ],
        req(OTHER),
        "'d'",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy([perm(url_path=path_pb2.PathMatcher(path=_s(exact=PATH)))], [ANY_P]),
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(url_path=path_pb2.PathMatcher(path=_s(prefix="/ratings.")))], [ANY_P]
                ),
            )
        ],
        req(),
        "no ALLOW",
    ),
    ([rbac("ALLOW", a=policy([perm(destination_port=8080)], [ANY_P]))], req(), None),
    ([rbac("ALLOW", a=policy([perm(destination_port=9090)], [ANY_P]))], req(), "no ALLOW"),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(header=rc.HeaderMatcher(name="x-user", exact_match="alice"))], [ANY_P]
                ),
            )
        ],
        req(headers={"x-user": "alice"}),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(header=rc.HeaderMatcher(name="x-user", exact_match="alice"))], [ANY_P]
                ),
            )
        ],
        req(headers={}),
        "no ALLOW",
    ),
    # A41: grpc- headers never match; :method is POST.
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(header=rc.HeaderMatcher(name="grpc-timeout", present_match=True))],
                    [ANY_P],
                ),
            )
        ],
        req(headers={"grpc-timeout": "1S"}),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(header=rc.HeaderMatcher(name=":method", exact_match="POST"))], [ANY_P]
                ),
            )
        ],
        req(),
        None,
    ),
    (
        [rbac("ALLOW", a=policy([perm(not_rule=perm(destination_port=8080))], [ANY_P]))],
        req(),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [
                        perm(
                            and_rules=cfg.Permission.Set(rules=[ANY_R, perm(destination_port=8080)])
                        )
                    ],
                    [ANY_P],
                ),
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [perm(and_rules=cfg.Permission.Set(rules=[ANY_R, perm(destination_port=1)]))],
                    [ANY_P],
                ),
            )
        ],
        req(),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [
                        perm(
                            or_rules=cfg.Permission.Set(
                                rules=[perm(destination_port=1), perm(destination_port=8080)]
                            )
                        )
                    ],
                    [ANY_P],
                ),
            )
        ],
        req(),
        None,
    ),
    ([rbac("ALLOW", a=policy([perm(destination_ip=_cidr("10.0.0.0", 24))], [ANY_P]))], req(), None),
    (
        [rbac("ALLOW", a=policy([perm(destination_ip=_cidr("10.1.0.0", 16))], [ANY_P]))],
        req(),
        "no ALLOW",
    ),
    # Principals: source addresses.
    (
        [rbac("ALLOW", a=policy([ANY_R], [principal(direct_remote_ip=_cidr("10.0.0.0", 8))]))],
        req(),
        None,
    ),
    ([rbac("ALLOW", a=policy([ANY_R], [principal(remote_ip=_cidr("10.0.0.0", 8))]))], req(), None),
    (
        [rbac("ALLOW", a=policy([ANY_R], [principal(source_ip=_cidr("192.168.0.0", 16))]))],
        req(),
        "no ALLOW",
    ),
    (
        [rbac("ALLOW", a=policy([ANY_R], [principal(direct_remote_ip=_cidr("::", 0))]))],
        req(),
        "no ALLOW",
    ),
    # Principals: authenticated, A41's order URI SAN, DNS SAN, subject.
    (
        [
            rbac(
                "ALLOW", a=policy([ANY_R], [principal(authenticated=cfg.Principal.Authenticated())])
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW", a=policy([ANY_R], [principal(authenticated=cfg.Principal.Authenticated())])
            )
        ],
        req(None),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            authenticated=cfg.Principal.Authenticated(
                                principal_name=_s(suffix=".svc")
                            )
                        )
                    ],
                ),
            )
        ],
        req(None, dns=("reviews.default.svc",)),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            authenticated=cfg.Principal.Authenticated(
                                principal_name=_s(exact="CN=legacy")
                            )
                        )
                    ],
                ),
            )
        ],
        req(None, subject="CN=legacy"),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            authenticated=cfg.Principal.Authenticated(principal_name=_s(exact=""))
                        )
                    ],
                ),
            )
        ],
        req(None),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            authenticated=cfg.Principal.Authenticated(
                                principal_name=_s(
                                    safe_regex=regex_pb2.RegexMatcher(
                                        regex="spiffe://cluster\\.local/ns/default/.*"
                                    )
                                )
                            )
                        )
                    ],
                ),
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            authenticated=cfg.Principal.Authenticated(
                                principal_name=_s(prefix="spiffe://cluster.local/ns/default/")
                            )
                        )
                    ],
                ),
            )
        ],
        req(OTHER),
        "no ALLOW",
    ),
    ([rbac("ALLOW", a=policy([ANY_R], [principal(not_id=principal(OTHER))]))], req(), None),
    (
        [rbac("ALLOW", a=policy([ANY_R], [principal(not_id=principal(OTHER))]))],
        req(OTHER),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            and_ids=cfg.Principal.Set(
                                ids=[
                                    principal(ME),
                                    principal(direct_remote_ip=_cidr("10.0.0.1", 32)),
                                ]
                            )
                        )
                    ],
                ),
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [
                        principal(
                            and_ids=cfg.Principal.Set(
                                ids=[
                                    principal(ME),
                                    principal(direct_remote_ip=_cidr("10.0.0.2", 32)),
                                ]
                            )
                        )
                    ],
                ),
            )
        ],
        req(),
        "no ALLOW",
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [principal(or_ids=cfg.Principal.Set(ids=[principal(OTHER), principal(ME)]))],
                ),
            )
        ],
        req(),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy(
                    [ANY_R],
                    [principal(header=rc.HeaderMatcher(name="x-tenant", prefix_match="acme"))],
                ),
            )
        ],
        req(headers={"x-tenant": "acme-1"}),
        None,
    ),
    (
        [
            rbac(
                "ALLOW",
                a=policy([ANY_R], [principal(url_path=path_pb2.PathMatcher(path=_s(exact=PATH)))]),
            )
        ],
        req(),
        None,
    ),
    # A41: metadata never matches; requested_server_name matches only "".
    ([rbac("ALLOW", a=policy([perm(metadata={})], [ANY_P]))], req(), "no ALLOW"),
    ([rbac("ALLOW", a=policy([perm(requested_server_name=_s(exact=""))], [ANY_P]))], req(), None),
    (
        [rbac("ALLOW", a=policy([perm(requested_server_name=_s(exact="x"))], [ANY_P]))],
        req(),
        "no ALLOW",
    ),
    # A policy needs both a permission and a principal.
    ([rbac("ALLOW", a=policy([], [ANY_P]))], req(), "no ALLOW"),
    ([rbac("ALLOW", a=policy([ANY_R], []))], req(), "no ALLOW"),
    # Several policies: any one matching grants; the first matching DENY is named.
    (
        [rbac("ALLOW", a=policy([ANY_R], [principal(OTHER)]), b=policy([ANY_R], [principal(ME)]))],
        req(),
        None,
    ),
    (
        [rbac("DENY", a=policy([ANY_R], [principal(ME)]), b=policy([ANY_R], [ANY_P]))],
        req(),
        "'a'",
    ),
]


@pytest.mark.parametrize(
    ("filters", "request_", "denied"),
    [pytest.param(*c, id=f"case{i}") for i, c in enumerate(CASES)],
)
def test_authorize(
    filters: list[tuple[str, RbacFilterConfig]], request_: RbacRequest, denied: str | None
) -> None:
    verdict = authorize(filters, request_)
    if denied is None:
        assert verdict is None
    else:
        assert verdict is not None and denied in verdict


@pytest.mark.parametrize(
    ("policy_msg", "error"),
    [
        pytest.param(
            cfg.Policy(permissions=[cfg.Permission(destination_port_range={})], principals=[ANY_P]),
            "destination_port_range",
            id="port-range",
        ),
        pytest.param(
            cfg.Policy(permissions=[ANY_R], principals=[cfg.Principal(filter_state={})]),
            "filter_state",
            id="filter-state",
        ),
        pytest.param(
            cfg.Policy(permissions=[ANY_R], principals=[ANY_P], condition={}), "CEL", id="cel"
        ),
    ],
)
def test_unsupported_rules_are_rejected(policy_msg: cfg.Policy, error: str) -> None:
    msg = rbac_pb2.RBAC(rules=cfg.RBAC(action=cfg.RBAC.ALLOW, policies={"p": policy_msg}))
    packed = any_pb2.Any()
    packed.Pack(msg)
    ctx = Ctx()
    assert filter_config(ctx, "f", packed, top_level=True) is None
    assert any(error in e for e in ctx.errors), ctx.errors
