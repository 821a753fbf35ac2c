"""The reviews mesh from `proxyless demo`, as code to copy.

Starts the embedded control plane, three xDS-enabled gRPC backends (v1 x2,
v2 x1) in this process, each running as service account `reviews`, gives the
control plane the bundled Istio YAML (routing, ISTIO_MUTUAL, STRICT mTLS and
an AuthorizationPolicy letting only productpage call reviews), and calls the
service as productpage through `proxyless.grpc.channel` - the same call you
would make against istiod with GRPC_XDS_BOOTSTRAP set (then `mesh=` is not
needed, and istio-agent writes the node metadata).

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
VERSION = {"reviews-v1-a": "v1", "reviews-v1-b": "v1", "reviews-v2": "v2"}


def main() -> None:
    control_plane = ControlPlane("").start()
    servers: list[EchoServer] = []
    meshes: list[Mesh] = []
    try:
        # Each backend is a workload of its own: node metadata as istio-agent writes it.
        for name in example_endpoints("reviews-mtls"):
            bootstrap = control_plane.bootstrap(
                node_id=name,
                metadata={
                    "INSTANCE_IPS": "127.0.0.1",
                    "SERVICE_ACCOUNT": "reviews",
                    "LABELS": {"app": "reviews", "version": VERSION[name]},
                },
            )
            bootstrap["server_listener_resource_name_template"] = "xds.istio.io/grpc/lds/inbound/%s"
            meshes.append(Mesh(bootstrap))
            # An xDS-enabled server (proxyless.grpc.server): mTLS and RBAC from xDS.
            servers.append(EchoServer(name, mesh=meshes[-1]).start())
        control_plane.update(
            render_example("reviews-mtls", {s.name: ("127.0.0.1", s.port) for s in servers})
        )

        # With istiod, this is just: proxyless.grpc.channel(TARGET)
        client = control_plane.bootstrap(
            node_id="productpage", metadata={"SERVICE_ACCOUNT": "productpage"}
        )
        with Mesh(client) as mesh:
            channel = proxyless.grpc.channel(TARGET, mesh=mesh)
            echo = channel.unary_unary(ECHO_METHOD)

            def call(**kwargs: object) -> dict[str, object]:
                # wait_for_ready: the backends serve once their Listener and SVID arrived
                return decode_reply(echo(b"hi", timeout=10, wait_for_ready=True, **kwargs))

            seen = Counter(call()["backend"] for _ in range(500))
            print("split (90% v1, 10% v2):", dict(seen))

            mobile = (("user-agent", "Mozilla/5.0 (iPhone) Mobile"),)
            seen = Counter(call(metadata=mobile)["backend"] for _ in range(50))
            print("Mobile route (v2):", dict(seen))
            print("the backends saw caller:", call()["caller"])

            print(proxyless.explain(TARGET, "/proxyless.test.Echo/Echo", mesh=mesh))
            channel.close()
    finally:
        for server in servers:
            server.stop()
        for backend_mesh in meshes:
            backend_mesh.close()
        control_plane.stop()


if __name__ == "__main__":
    main()
