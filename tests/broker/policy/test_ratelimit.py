"""Per-address token buckets: ``broker/policy/ratelimit.py`` with a fake clock."""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.policy.ratelimit import RateLimiter, client_address, peer_address
from pta.errors import Overloaded


class FakeClock:
    """Monotonic time that moves only when told."""

    def __init__(self) -> None:
        """Start at zero."""
        self.now = 0.0

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


class TestRateLimiter:
    """Bursts pass, the excess is refused, tokens come back with time."""

    def test_burst_then_refused_then_refilled(self) -> None:
        """``burst`` sign-ins pass at once, the next is refused, one more after 1/rate s."""
        clock = FakeClock()
        limiter = RateLimiter(2, 3, clock=clock)
        for _ in range(3):
            limiter.check("203.0.113.1")
        with pytest.raises(Overloaded):
            limiter.check("203.0.113.1")
        clock.now = 0.5
        limiter.check("203.0.113.1")
        with pytest.raises(Overloaded):
            limiter.check("203.0.113.1")

    def test_addresses_are_independent(self) -> None:
        """One address running out does not limit another."""
        limiter = RateLimiter(1, 1, clock=FakeClock())
        limiter.check("a")
        with pytest.raises(Overloaded):
            limiter.check("a")
        limiter.check("b")

    def test_off_when_rate_is_zero(self) -> None:
        """A rate of 0 limits nothing and tracks nothing."""
        limiter = RateLimiter(0)
        for _ in range(1000):
            limiter.check("a")
        assert not limiter.enabled
        assert len(limiter) == 0

    def test_memory_is_bounded(self) -> None:
        """Only the most recently seen addresses are tracked."""
        limiter = RateLimiter(10, clock=FakeClock(), max_addresses=100)
        for n in range(1000):
            limiter.check(f"addr-{n}")
        assert len(limiter) == 100


class TestPeerAddress:
    """grpc peer strings to addresses."""

    @pytest.mark.parametrize(
        ("peer", "address"),
        [
            ("ipv4:127.0.0.1:5555", "127.0.0.1"),
            ("ipv6:[::1]:5555", "::1"),
            ("ipv6:%5B::1%5D:5555", "::1"),
            ("ipv6:%5Bfe80::1%25eth0%5D:5555", "fe80::1%eth0"),
            ("unix:/tmp/socket", "unix:/tmp/socket"),
        ],
        ids=["ipv4", "ipv6", "ipv6-as-grpc-writes-it", "ipv6-scoped", "other"],
    )
    def test_peer(self, peer: str, address: str) -> None:
        """The port is dropped, brackets too (percent-encoded, as grpc writes them)."""
        assert peer_address(peer) == address

    async def test_grpc_peer_over_ipv6(self) -> None:
        """What a real grpc server names an IPv6 caller is an address: ``::1`` here."""
        peers: list[str] = []

        async def check(
            request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> health_pb2.HealthCheckResponse:
            del request
            peers.append(context.peer())
            return health_pb2.HealthCheckResponse()

        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
        )
        try:
            port = server.add_insecure_port("[::1]:0")
        except RuntimeError:
            pytest.skip("no IPv6 loopback here")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        finally:
            await server.stop(None)
        (peer,) = peers
        assert ipaddress.ip_address(peer_address(peer)) == ipaddress.ip_address("::1"), peer
        trusted = (ipaddress.ip_network("::1/128"),)
        assert client_address("203.0.113.5", peer, trusted) == "203.0.113.5"


class TestClientAddress:
    """Whose address is limited: the caller's, or the user's when the caller is trusted."""

    def test_untrusted_caller_cannot_choose_the_address(self) -> None:
        """A request's client_ip is ignored unless the caller is a trusted front end."""
        trusted = (ipaddress.ip_network("10.1.0.0/16"),)
        assert client_address("203.0.113.5", "ipv4:198.51.100.7:4000", trusted) == ("198.51.100.7")
        assert client_address("203.0.113.5", "ipv4:10.1.2.3:4000", trusted) == "203.0.113.5"
        assert client_address("", "ipv4:10.1.2.3:4000", trusted) == "10.1.2.3"
        assert client_address("203.0.113.5", "ipv4:10.1.2.3:4000", ()) == "10.1.2.3"
