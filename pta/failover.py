"""One client channel to several brokers: its gRPC target, service config and options.

A client given several brokers (``host:port`` entries separated by commas, or one DNS name
with several addresses) opens one channel to all of them. gRPC's ``round_robin`` policy
spreads calls over the brokers it can reach, and the retry policy sends a call that a broker
refused with UNAVAILABLE to the next one — but only a call no agent can have seen: a broker
sends a sign-in's response headers before it hands the password to an agent (gRPC commits a
call on them), and answers an error an agent may have acted on with
``grpc-retry-pushback-ms: -1`` (:data:`pta.errors.NO_RETRY`). Either way gRPC does not resend
it, so the directory never counts one password twice.

Front ends in any language use the same settings: :data:`SERVICE_CONFIG` as the channel's
default service config, and a target from :func:`brokers` (README, "Several brokers").
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pta import rpc
from pta.config import parse_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SERVICE: Final = "pta.v1.SignInService"
#: The unary methods a client resends after UNAVAILABLE. ``SignInStream`` is not among them:
#: gRPC commits a stream once its first answer arrives, and a stream's items carry their own
#: statuses; a front end that sends them again decides so itself.
RETRIED_METHODS: Final = ("SignIn", "ChangePassword", "CompleteMfa", "GetSigningKeys")
#: Tries in all, the first included. A fresh channel (``pta-signin``) makes its first call as
#: soon as one broker is connected, and round robin only picks connected ones: the backoff
#: (0.1 s doubling, randomised) and a fourth try leave room for the others to connect (60
#: runs of ``pta-signin`` for a tenant whose only agent is at the second of two brokers all
#: signed in, the first asked at most twice).
MAX_ATTEMPTS: Final = 4
#: What a broker answers a call it refused before any agent saw it. UNAVAILABLE is pta's own
#: refusal (no agent attached, draining, store down); CANCELLED is what a stopping gRPC server
#: answers calls that arrived but that no handler had taken yet (grpc/grpc#41785: seen once in
#: 1,686 sign-ins across a SIGTERM under load). A call that an agent may have seen is never
#: resent whatever its status: its response headers came first and committed it.
RETRYABLE_CODES: Final = ["UNAVAILABLE", "CANCELLED"]
#: Every field of gRPC's service config a client needs (gRFC A6 for ``retryPolicy``). No
#: ``retryThrottling``: it would stop resending to the other broker precisely while one broker
#: refuses every sign-in of a tenant (its agents not attached there), and MAX_ATTEMPTS already
#: bounds what a refusal costs.
SERVICE_CONFIG: Final[dict[str, Any]] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
            "retryPolicy": {
                "maxAttempts": MAX_ATTEMPTS,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": RETRYABLE_CODES,
            },
        }
    ],
}
SERVICE_CONFIG_JSON: Final = json.dumps(SERVICE_CONFIG, separators=(",", ":"))


class ServerNameNeeded(ValueError):
    """Several hosts, and no one name given that every broker's certificate carries."""


@dataclass(frozen=True, slots=True)
class Brokers:
    """Where a client channel goes: a gRPC target, and the name every broker answers to."""

    #: ``dns:///host:port`` (one entry), or ``ipv4:a:p,b:p`` / ``ipv6:[a]:p,[b]:p`` (a list).
    target: str
    #: The name checked against each broker's certificate and sent as ``:authority``; empty
    #: when the target's own host is that name.
    server_name: str = ""

    def options(self) -> list[tuple[str, Any]]:
        """Channel options: :data:`pta.rpc.CHANNEL_OPTIONS`, the service config, the name."""
        options: list[tuple[str, Any]] = [
            *rpc.CHANNEL_OPTIONS,
            ("grpc.service_config", SERVICE_CONFIG_JSON),
        ]
        if name := self.server_name.removeprefix("[").removesuffix("]"):
            # The authority is the name the TLS check uses: one name for every broker.
            options.append(("grpc.default_authority", f"[{name}]" if ":" in name else name))
        return options


def brokers(
    text: str,
    server_name: str = "",
    resolve: Callable[[str, int], Sequence[str]] | None = None,
) -> Brokers:
    """The channel target for ``host:port``, or for several of them separated by commas.

    One entry becomes a ``dns:///`` target: gRPC resolves it again as it needs to and uses
    every address the name has (a ``dns:`` target is taken as it is, e.g. one naming the DNS
    server to ask, ``dns://10.0.0.53/brokers.example.net:7443``). A list is resolved here,
    once (gRPC has no target for several names): each host's IPv4 addresses when every host
    has one, else their IPv6 addresses.
    A list of one host (several ports of one machine) is checked against that host's name; a
    list of several hosts needs ``server_name``, one name every broker's certificate carries
    (``pta-broker serve --san NAME``).

    Args:
        text: ``host:port`` or ``host:port,host:port,…`` (``[v6]:port`` too), or a
            ``dns:`` target.
        server_name: The name every broker's certificate carries (overrides the host's).
        resolve: ``(host, port) -> addresses``; :func:`resolve_addresses` by default.

    Returns:
        The target, and the name to check when it is not the target's own.

    Raises:
        ServerNameNeeded: Several hosts are given without ``server_name``.
        ValueError: An entry is not ``host:port``, does not resolve, or the hosts have no
            address family in common.
    """
    if text.startswith("dns:") and "," not in text:  # Already a target: dns://server/name:port
        parse_endpoint(text.rpartition("/")[2])
        return Brokers(target=text, server_name=server_name)
    entries = [entry.strip() for entry in text.split(",")]
    endpoints = [parse_endpoint(entry) for entry in entries]
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return Brokers(target=f"dns:///{_join(host, port)}", server_name=server_name)
    hosts = {host for host, _ in endpoints}
    if not server_name and len(hosts) > 1:
        raise ServerNameNeeded(
            "brokers on several hosts need the one server name their certificates all carry"
        )
    found = [(port, (resolve or resolve_addresses)(host, port)) for host, port in endpoints]
    for family, prefix in ((ipaddress.IPv4Address, "ipv4"), (ipaddress.IPv6Address, "ipv6")):
        picked = [
            [(address, port) for address in addresses if isinstance(_ip(address), family)]
            for port, addresses in found
        ]
        if all(picked):
            unique = dict.fromkeys(_join(a, p) for group in picked for a, p in group)
            return Brokers(
                target=f"{prefix}:{','.join(unique)}", server_name=server_name or hosts.pop()
            )
    raise ValueError(f"the hosts of {text!r} have no address family in common")


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address of ``host`` (an IP address is its own), in the system's order.

    Raises:
        ValueError: When the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host}: {error.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.partition("%")[0])  # fe80::1%eth0: the zone aside


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
