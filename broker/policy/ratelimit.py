"""Per-address rate limiting: a token bucket for each client address, in bounded memory.

The address is the caller's own, or the end user's (``client_ip`` in the request, as the
sign-in page saw it) when the caller is a trusted front end (``--trusted-proxy``). Refusals
are immediate RESOURCE_EXHAUSTED answers: nothing is sealed, queued or sent to an agent.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING
from urllib.parse import unquote

from pta.errors import Overloaded

if TYPE_CHECKING:
    from collections.abc import Callable

#: How many addresses are tracked; the least recently seen are forgotten first.
MAX_ADDRESSES = 100_000


class RateLimiter:
    """``rate`` sign-ins a second per address, bursts of up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        """Create a limiter; a ``rate`` of 0 or less turns it off."""
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._max = max_addresses
        #: address -> (tokens, last refill time)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether any limit applies."""
        return self.rate > 0

    def check(self, address: str) -> None:
        """Take one token for ``address``.

        Raises:
            Overloaded: When the address has none left.
        """
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, last = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            raise Overloaded("too many sign-ins from this address; try again shortly")
        self._buckets[address] = (tokens - 1, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        """How many addresses are tracked."""
        return len(self._buckets)


def client_address(
    client_ip: str, peer: str, trusted: tuple[IPv4Network | IPv6Network, ...]
) -> str:
    """The address to limit: ``client_ip`` only when the caller is a trusted front end.

    Anyone can put any ``client_ip`` in a request; believing it from everyone would let a
    caller escape its limit, or spend someone else's.
    """
    address = peer_address(peer)
    if client_ip and trusted:
        try:
            caller = ip_address(address)
        except ValueError:
            return address
        if any(caller in network for network in trusted):
            return client_ip
    return address


def peer_address(peer: str) -> str:
    """The address part of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``).

    grpc writes an IPv6 peer as a URI, percent-encoded: ``ipv6:%5B::1%5D:5``.
    """
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return unquote(rest.rpartition(":")[0]).strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer
