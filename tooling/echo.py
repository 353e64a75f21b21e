"""A bare grpc.aio echo server: the transport's own round trip, what a sign-in is judged against.

A sign-in crosses two gRPC round trips (client to broker, broker to agent) and one bind; everything
else is pta's to shrink. The benchmark measures this server's unary round trip at one in flight,
between two processes, over the same TLS as the broker's public endpoint (a P-256 server
certificate from a pta CA), with a payload the size of a SignInRequest and no work, and reports
a sign-in's added p50 in those round trips (docs/performance.md).

``python -m tooling.echo DIR`` serves on a free loopback port and writes it to ``DIR/echo.port``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc

from broker.trust.ca import CertificateAuthority

METHOD = "/pta.bench.Echo/Echo"
PORT_FILE = "echo.port"


def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    del context
    return request


async def _serve(workdir: Path) -> None:
    ca = CertificateAuthority.load_or_create(workdir)
    identity = ca.server_identity(workdir, ())
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        _echo
    )  # Bytes in, the same bytes out.
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("pta.bench.Echo", {"Echo": handler}),)
    )
    credentials = grpc.ssl_server_credentials([(identity.key_pem, identity.chain_pem)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    written = workdir / f"{PORT_FILE}.new"
    written.write_text(str(port))
    written.rename(workdir / PORT_FILE)  # Whole or not at all, for the reader polling it.
    await server.wait_for_termination()


def start(workdir: Path, timeout: float = 15.0) -> tuple[subprocess.Popen[bytes], str, bytes]:
    """Start the echo server as a process of its own; its process, ``host:port`` and CA.

    Raises:
        RuntimeError: It did not serve within ``timeout`` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "tooling.echo", str(workdir)])  # noqa: S603
    deadline = time.monotonic() + timeout
    while not (workdir / PORT_FILE).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the echo server did not start")
        time.sleep(0.05)
    port = (workdir / PORT_FILE).read_text()
    return process, f"127.0.0.1:{port}", (workdir / "ca.pem").read_bytes()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
