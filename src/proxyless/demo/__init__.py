"""``proxyless demo``: a working mesh on one machine, in seconds, with SPIFFE mTLS.

What it does, all on 127.0.0.1:

1. starts the embedded control plane, and three gRPC backends of a
   ``reviews`` service as real processes — ``reviews-v1-a`` and
   ``reviews-v1-b`` (version v1) and ``reviews-v2`` — each an xDS-enabled
   server (``proxyless.grpc.server``, gRFC A36) of that control plane,
   running as service account ``reviews``;
2. gives the control plane the bundled Istio config
   (``proxyless/examples/reviews-mtls.yaml``) with the backends' ports: a
   ServiceEntry, a VirtualService sending ``user-agent: .*Mobile.*`` to v2
   and everyone else 90/10 to v1/v2 with retries, a DestinationRule with
   subsets, outlier detection and ``tls.mode: ISTIO_MUTUAL``, a
   PeerAuthentication STRICT and an AuthorizationPolicy letting only
   ``productpage`` call reviews;
3. calls the service as ``productpage`` through
   ``proxyless.grpc.channel("xds:///reviews...:9080")`` and prints what
   happened: the identities on both ends of the mTLS connections (the
   client's SVID, the SVID each backend presented and the SAN matchers the
   client checked it against, the caller each backend's handler saw), calls
   per subset and endpoint against the configured weights, the Mobile
   route, a call from ``ratings`` refused by the AuthorizationPolicy (and
   why), and what happened when one backend was made to fail (retries hid
   the failures from the caller, outlier detection ejected the backend).

Every certificate comes from the control plane's development CA, over SDS.
Exit status 0 when the mesh behaved as configured.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Mapping
from typing import TextIO

import grpc

from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.examples import example_template, render_template, template_endpoints
from proxyless.demo.identity import (
    allow_policies,
    client_tls,
    describe_matchers,
    refused_call,
    report_callers,
    verified_servers,
)
from proxyless.demo.processes import backend_bootstrap, start_backends
from proxyless.demo.traffic import SUBSET, Say, failure, mobile, split
from proxyless.errors import ProxylessError
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD

__all__ = ["run_demo"]

EXAMPLE = "reviews-mtls"
TARGET = "xds:///reviews.default.svc.cluster.local:9080"
HOST = "reviews.default.svc.cluster.local"
NAMESPACE = "default"
SERVER_ACCOUNT = "reviews"
CLIENT_ACCOUNT = "productpage"
INTRUDER_ACCOUNT = "ratings"
#: how long backends may take to get their Listener and certificate
READY_TIMEOUT = 20.0


def _cluster(name: str) -> str:
    return f"outbound|9080|{SUBSET[name]}|{HOST}"


def run_demo(out: TextIO = sys.stdout, *, calls: int = 1000, template: str | None = None) -> int:
    """Run the demo, printing to ``out``; returns the exit status.

    ``template`` replaces the bundled mesh (``reviews-mtls``): Istio YAML with
    the same endpoint placeholders (:mod:`proxyless.controlplane.examples`),
    to see what the demo reports for another config."""
    started = time.monotonic()
    if template is None:
        template = example_template(EXAMPLE)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("proxyless demo: a reviews service with v1 x2 and v2 x1, routed by Istio YAML, over mTLS")
    say("")
    try:
        ok = _run(say, calls, template)
    except (ProxylessError, RuntimeError, OSError, grpc.RpcError) as exc:
        # a backend that did not start or serve, a certificate that did not verify...
        say(f"   stopped: {type(exc).__name__}: {exc}")
        ok = False
    took = time.monotonic() - started
    say("")
    say(f"{'OK' if ok else 'FAILED'}: demo finished in {took:.1f}s")
    say("Next: examples/reviews_client.py is this demo as code to copy; `proxyless analyze`,")
    say("`proxyless check` and `proxyless explain` show what a mesh config does and why.")
    return 0 if ok else 1


def _run(say: Say, calls: int, template: str) -> bool:
    names = template_endpoints(template)
    ok = True
    with ControlPlane("", stderr=io.StringIO()) as cp:
        trust_domain = cp.trust_domain
        bootstraps = {
            name: backend_bootstrap(
                cp,
                name,
                service_account=SERVER_ACCOUNT,
                labels={"app": "reviews", "version": SUBSET[name]},
            )
            for name in names
        }
        with start_backends(names, bootstraps) as backends:
            endpoints = {name: f"127.0.0.1:{backends[name].port}" for name in names}
            for name in names:
                say(f"  backend {name:<13} subset {SUBSET[name]}  {endpoints[name]}")
            # The ServiceEntry names the backends' ports: bound first, then configured.
            cp.update(render_template(template, endpoints, what="the demo's mesh"))
            for proc in backends.values():
                proc.expect("SERVING", READY_TIMEOUT)
            say(f"  control plane (xDS)    {cp.target}")
            say(f"  target                 {TARGET}")
            say("")
            client = cp.bootstrap(
                node_id="productpage-demo", metadata={"SERVICE_ACCOUNT": CLIENT_ACCOUNT}
            )
            with Mesh(client) as mesh:
                import proxyless.grpc

                channel = proxyless.grpc.channel(TARGET, mesh=mesh)
                echo = channel.unary_unary(ECHO_METHOD)
                ok &= _identities(say, 1, mesh, endpoints, trust_domain)
                ok &= split(say, 2, echo, calls)
                ok &= mobile(say, 3, echo)
                say("4. What each backend's handler saw: proxyless.grpc.peer_identity(context)")
                expected = f"spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{CLIENT_ACCOUNT}"
                callers = {name: backends[name].wait_callers(5.0) for name in names}
                ok &= report_callers(say, callers, expected)
                say("")
                ok &= _refusal(say, 5, cp)
                ok &= failure(say, 6, echo, mesh, backends)
                channel.close()
    return ok


def _identities(
    say: Say, n: int, mesh: Mesh, endpoints: Mapping[str, str], trust_domain: str
) -> bool:
    credentials = {
        name: client_tls(mesh, TARGET, _cluster(name), READY_TIMEOUT) for name in endpoints
    }
    servers = verified_servers(credentials, endpoints, READY_TIMEOUT)
    tls = next(iter(credentials.values()))
    own = tls.identity
    say(f"{n}. Identities: mTLS everywhere (DestinationRule ISTIO_MUTUAL, PeerAuthentication")
    say("   STRICT), SVIDs from the control plane's development CA over SDS")
    if own is not None:
        minutes = (own.not_after - time.time()) / 60
        say(f"   this client (productpage) is {own.spiffe_id}")
        say(f"     (from {own.source}, valid {minutes:.0f} more minutes)")
    say(f"   it accepts reviews servers matching: {describe_matchers(tls)}")
    for name, peer in servers.items():
        say(f"   {name:<13} presented {peer.spiffe_id}: verified")
    say("")
    client_id = f"spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{CLIENT_ACCOUNT}"
    server_id = f"spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{SERVER_ACCOUNT}"
    return (
        own is not None
        and own.spiffe_id == client_id
        and all(p.spiffe_id == server_id for p in servers.values())
    )


def _refusal(say: Say, n: int, cp: ControlPlane) -> bool:
    intruder = f"spiffe://{cp.trust_domain}/ns/{NAMESPACE}/sa/{INTRUDER_ACCOUNT}"
    bootstrap = cp.bootstrap(node_id="ratings-demo", metadata={"SERVICE_ACCOUNT": INTRUDER_ACCOUNT})
    with Mesh(bootstrap) as mesh:
        import proxyless.grpc

        with proxyless.grpc.channel(TARGET, mesh=mesh) as channel:
            echo = channel.unary_unary(ECHO_METHOD)
            code, details = refused_call(lambda: echo(b"hello", timeout=5))
    say(f"{n}. One call from another workload, ratings: {intruder}")
    say(f"   {code.name if code else 'not refused'}: {details}")
    policies = allow_policies(cp.mesh, NAMESPACE, {"app": "reviews"})
    say("   why: the ALLOW policies of the reviews workloads are")
    for policy in policies or ["(none)"]:
        say(f"     AuthorizationPolicy {policy}")
    say(f"   and none matches ratings: the reviews server refused {intruder}")
    say("   before its handler ran (productpage's calls above were allowed)")
    say("")
    return code == grpc.StatusCode.PERMISSION_DENIED and "no ALLOW policy matched" in details
