"""The reviews mesh from `proxyless demo`, as code to copy.

Starts three gRPC backends (v1 x2, v2 x1) in this process, the embedded
control plane with the bundled Istio YAML, and calls the service through
`proxyless.grpc.channel` - the same call you would make against istiod with
GRPC_XDS_BOOTSTRAP set (then `mesh=` is not needed).

    python examples/reviews_client.py
"""

from __future__ import annotations

from collections import Counter

import proxyless.grpc
from proxyless.controlplane.embedded import ControlPlane
from proxyless.controlplane.examples import example_endpoints, render_example
from proxyless.mesh import Mesh
from proxyless.testing.backends import ECHO_METHOD, EchoServer, decode_reply

TARGET = "xds:///reviews.default.svc.cluster.local:9080"


def main() -> None:
    backends = {name: EchoServer(name).start() for name in example_endpoints("reviews")}
    mesh_yaml = render_example("reviews", {n: ("127.0.0.1", b.port) for n, b in backends.items()})
    control_plane = ControlPlane(mesh_yaml).start()
    try:
        # With istiod, this is just: proxyless.grpc.channel(TARGET)
        with Mesh(control_plane.bootstrap(node_id="example")) as mesh:
            channel = proxyless.grpc.channel(TARGET, mesh=mesh)
            echo = channel.unary_unary(ECHO_METHOD)

            seen = Counter(decode_reply(echo(b"hi", timeout=5))["backend"] for _ in range(500))
            print("split (90% v1, 10% v2):", dict(seen))

            mobile = (("user-agent", "Mozilla/5.0 (iPhone) Mobile"),)
            seen = Counter(
                decode_reply(echo(b"hi", timeout=5, metadata=mobile))["backend"] for _ in range(50)
            )
            print("Mobile route (v2):", dict(seen))

            print(proxyless.explain(TARGET, "/proxyless.test.Echo/Echo", mesh=mesh))
    finally:
        control_plane.stop()
        for backend in backends.values():
            backend.stop()


if __name__ == "__main__":
    main()
