"""``proxyless.grpc.aio.server``: PERMISSIVE, RBAC and not-serving on grpc.aio.

The same inbound Listeners in istiod's shape as the sync tests; the handler
is a coroutine reading ``proxyless.grpc.aio.peer_identity``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from tests.e2e.grpc_server.conftest import (
    CLIENT_ID,
    METHOD,
    permissive,
    principal_policy,
    publish,
)

import proxyless.grpc.aio
from proxyless.controlplane.ca import DevCA
from proxyless.controlplane.server import AdsServer
from proxyless.mesh import Mesh

SERVER_DNS = "reviews.default.svc"


async def _who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return (proxyless.grpc.aio.peer_identity(context) or "plaintext").encode()


async def _call(channel: grpc.aio.Channel) -> tuple[str | None, grpc.StatusCode]:
    async with channel:
        try:
            reply = await channel.unary_unary(METHOD)(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            return None, exc.code()
    return reply.decode(), grpc.StatusCode.OK


def test_aio_server_permissive_rbac_and_not_serving(ads: AdsServer, mesh: Mesh, ca: DevCA) -> None:
    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            "test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
        )
        server = proxyless.grpc.aio.server(mesh=mesh, handlers=[handler])
        port = server.add_port("127.0.0.1:0")
        await server.start()
        try:
            plain = f"127.0.0.1:{port}"
            # Not serving before the Listener arrives.
            assert (await _call(grpc.aio.insecure_channel(plain)))[1] == grpc.StatusCode.UNAVAILABLE
            cert = ca.issue("spiffe://cluster.local/ns/default/sa/reviews", dns=(SERVER_DNS,))
            # Only CLIENT_ID may call; plaintext callers match no ALLOW policy.
            publish(
                ads, port, permissive(ca, cert, allow={"ns-allow-0": principal_policy(CLIENT_ID)})
            )
            for _ in range(500):
                if server.serving():
                    break
                await asyncio.sleep(0.01)
            client = ca.issue(CLIENT_ID)
            creds = grpc.ssl_channel_credentials(ca.roots_pem, client.key_pem, client.chain_pem)
            options = [("grpc.ssl_target_name_override", SERVER_DNS)]
            mtls = grpc.aio.secure_channel(plain, creds, options=options)
            assert await _call(mtls) == (CLIENT_ID, grpc.StatusCode.OK)
            plaintext = await _call(grpc.aio.insecure_channel(plain))
            assert plaintext == (None, grpc.StatusCode.PERMISSION_DENIED)
        finally:
            await server.stop(0)

    asyncio.run(main())
