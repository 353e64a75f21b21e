"""``pta/failover.py``: the target for several brokers, and what its retry policy resends.

The targets are built from real addresses (IP literals, ``localhost``) or from a resolver given
as a table. The retry policy is asked of real gRPC: two ``grpc.aio`` servers answer
``pta.v1.SignInService/SignIn`` through :func:`pta.errors.rpc_errors` (as the broker does), a
client channel made with :meth:`~pta.failover.Brokers.options` calls them, and each server
counts the calls it saw.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest

from broker.dispatch.jobs import LOST_AFTER_ACK, AgentLost
from pta import errors, failover
from pta.v1 import signin_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

#: A resolver as a table: names, and the addresses each has.
NAMES = {
    "dual.test": ["10.0.0.1", "fd00::1"],
    "four.test": ["10.0.0.2"],
    "six.test": ["fd00::2"],
    "twice.test": ["10.0.0.1", "10.0.0.1"],
}


Method: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"


def _table(host: str, _port: int) -> list[str]:
    return NAMES[host]


class TestBrokers:
    """What ``--broker`` becomes: a gRPC target, and the name checked against certificates."""

    @pytest.mark.parametrize(
        ("given", "server_name", "target", "name"),
        [
            ("broker.example.net:7443", "", "dns:///broker.example.net:7443", ""),
            ("[::1]:7443", "", "dns:///[::1]:7443", ""),
            ("10.0.0.9:7443", "brokers.test", "dns:///10.0.0.9:7443", "brokers.test"),
            (
                "127.0.0.1:7001,127.0.0.1:7002",
                "",
                "ipv4:127.0.0.1:7001,127.0.0.1:7002",
                "127.0.0.1",
            ),
            ("[::1]:7001, [::1]:7002", "", "ipv6:[::1]:7001,[::1]:7002", "::1"),
            (
                "localhost:7001,localhost:7002",
                "",
                "ipv4:127.0.0.1:7001,127.0.0.1:7002",
                "localhost",
            ),
            (
                "dual.test:7001,four.test:7002",
                "brokers.test",
                "ipv4:10.0.0.1:7001,10.0.0.2:7002",
                "brokers.test",
            ),
            (
                "twice.test:1,twice.test:1,four.test:1",
                "b.test",
                "ipv4:10.0.0.1:1,10.0.0.2:1",
                "b.test",
            ),
            ("dual.test:1,six.test:1", "b.test", "ipv6:[fd00::1]:1,[fd00::2]:1", "b.test"),
            ("dns://10.0.0.53/b.example:7443", "", "dns://10.0.0.53/b.example:7443", ""),
        ],
        ids=[
            "one-name",
            "one-ipv6",
            "one-named-otherwise",
            "ports-of-one-ip",
            "ports-of-one-ipv6",
            "ports-of-localhost",
            "ipv4-when-all-have-it",
            "each-address-once",
            "else-ipv6",
            "a-dns-target",
        ],
    )
    def test_target(self, given: str, server_name: str, target: str, name: str) -> None:
        """One entry stays a name gRPC resolves; a list becomes its addresses, one family."""
        resolve = _table if ".test" in given else None
        assert failover.brokers(given, server_name, resolve) == failover.Brokers(target, name)

    @pytest.mark.parametrize(
        ("given", "error", "match"),
        [
            ("127.0.0.1", ValueError, "host:port"),
            ("127.0.0.1:7001,", ValueError, "host:port"),
            ("dns:///b.example", ValueError, "host:port"),
            ("four.test:1,six.test:1", ValueError, "no address family in common"),
            ("127.0.0.1:7001,localhost:7002", failover.ServerNameNeeded, "server name"),
            ("four.invalid:1,four.invalid:2", ValueError, "cannot resolve four.invalid"),
        ],
        ids=[
            "no-port",
            "empty-entry",
            "dns-target-no-port",
            "no-common-family",
            "several-hosts",
            "unknown-name",
        ],
    )
    def test_refused(self, given: str, error: type[ValueError], match: str) -> None:
        """What cannot be a target says why."""
        server_name = "b.test" if "test" in given or "invalid" in given else ""
        resolve = _table if ".test" in given else None
        with pytest.raises(error, match=match):
            failover.brokers(given, server_name, resolve)

    def test_options(self) -> None:
        """The channel options: pta's own, the service config, one name (IPv6 bracketed)."""
        options = dict(failover.Brokers("ipv6:[::1]:1,[::1]:2", "::1").options())
        assert options["grpc.default_authority"] == "[::1]"
        assert json.loads(options["grpc.service_config"]) == failover.SERVICE_CONFIG
        assert "grpc.default_authority" not in dict(failover.Brokers("dns:///b:1").options())

    def test_retried_methods_are_the_contracts_unary_ones(self) -> None:
        """Every method named exists and is unary; SignInStream is never resent."""
        service = signin_pb2.DESCRIPTOR.services_by_name["SignInService"]
        assert service.full_name == failover.SERVICE
        unary = {
            m.name for m in service.methods if not m.client_streaming and not m.server_streaming
        }
        assert set(failover.RETRIED_METHODS) == unary
        assert "SignInStream" not in failover.RETRIED_METHODS


class Broker:
    """A real aio server answering SignIn through ``rpc_errors``, counting its calls."""

    def __init__(self) -> None:
        """Answer with an empty response until told to raise."""
        self.calls = 0
        self.raise_: Callable[[], None] = lambda: None
        self.headers_first = False

    async def sign_in(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Count the call; send the headers first when told; raise what the test says."""
        self.calls += 1
        async with errors.rpc_errors(context):
            if self.headers_first:  # As a broker does before an agent may try the password.
                await context.send_initial_metadata(())
            self.raise_()
            return request


@pytest.fixture
async def brokers() -> AsyncIterator[tuple[list[Broker], grpc.aio.Channel]]:
    """Two servers on loopback ports, and one channel to both made as pta-signin makes it."""
    handlers = [Broker(), Broker()]
    servers, ports = [], []
    for handler in handlers:
        server = grpc.aio.server()
        method: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            handler.sign_in
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(failover.SERVICE, {"SignIn": method})]
        )
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    target = failover.brokers(",".join(f"127.0.0.1:{port}" for port in ports))
    channel = grpc.aio.insecure_channel(target.target, options=target.options())
    warm: Method = channel.unary_unary(f"/{failover.SERVICE}/SignIn")
    for _ in range(50):  # Until both are connected: round robin picks only ready ones.
        if all(handler.calls for handler in handlers):
            break
        await warm(b"warm", timeout=5)
    for handler in handlers:
        handler.calls = 0
    try:
        yield handlers, channel
    finally:
        await channel.close()
        for server in servers:
            await server.stop(None)


async def _calls(
    brokers: tuple[list[Broker], grpc.aio.Channel], error: BaseException | None, n: int = 1
) -> tuple[list[int], list[grpc.StatusCode]]:
    """Make ``n`` calls with both servers raising ``error``: calls each saw, statuses got."""
    handlers, channel = brokers

    def raise_() -> None:
        if error is not None:
            raise error

    for handler in handlers:
        handler.raise_ = raise_
    method: Method = channel.unary_unary(f"/{failover.SERVICE}/SignIn")
    statuses = []
    for _ in range(n):
        try:
            await method(b"x", timeout=5)
            statuses.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as failed:
            statuses.append(failed.code())
    return [handler.calls for handler in handlers], statuses


class TestRetryPolicy:
    """What real gRPC does with pta's service config and the broker's answers."""

    async def test_round_robin(self, brokers: tuple[list[Broker], grpc.aio.Channel]) -> None:
        """Calls go to each broker in turn."""
        calls, statuses = await _calls(brokers, None, n=10)
        assert calls == [5, 5]
        assert statuses == [grpc.StatusCode.OK] * 10

    async def test_refused_before_dispatch_is_resent(
        self, brokers: tuple[list[Broker], grpc.aio.Channel]
    ) -> None:
        """UNAVAILABLE before any agent had it: tried at each broker, MAX_ATTEMPTS in all."""
        calls, statuses = await _calls(brokers, errors.NoAgentAvailable("no agent"))
        assert min(calls) >= 1, "each broker was asked"
        assert sum(calls) == failover.MAX_ATTEMPTS
        assert statuses == [grpc.StatusCode.UNAVAILABLE]

    @pytest.mark.parametrize(
        "error",
        [
            AgentLost(LOST_AFTER_ACK),
            errors.DirectoryUnavailable("directory down"),
            errors.AgentMayHaveTried("the agent refused"),
        ],
        ids=lambda e: type(e).__name__,
    )
    async def test_may_have_been_tried_is_not_resent(
        self, brokers: tuple[list[Broker], grpc.aio.Channel], error: errors.PtaError
    ) -> None:
        """UNAVAILABLE with the no-retry pushback: one call, at one broker."""
        assert error.may_have_been_tried
        calls, statuses = await _calls(brokers, error)
        assert sorted(calls) == [0, 1]
        assert statuses == [grpc.StatusCode.UNAVAILABLE]

    async def test_committed_by_headers_is_not_resent(
        self, brokers: tuple[list[Broker], grpc.aio.Channel]
    ) -> None:
        """Headers sent before the failure: gRPC has committed the call, whatever follows."""
        for handler in brokers[0]:
            handler.headers_first = True
        calls, statuses = await _calls(brokers, errors.Unavailable("lost after dispatch"))
        assert sorted(calls) == [0, 1]
        assert statuses == [grpc.StatusCode.UNAVAILABLE]

    async def test_other_statuses_are_not_resent(
        self, brokers: tuple[list[Broker], grpc.aio.Channel]
    ) -> None:
        """Only UNAVAILABLE is resent: a full queue or a deadline is the caller's to judge."""
        for error in (errors.Overloaded("full"), errors.DeadlineExceeded("late")):
            before = sum(handler.calls for handler in brokers[0])
            calls, statuses = await _calls(brokers, error)
            assert sum(calls) - before == 1
            assert statuses == [error.code]
