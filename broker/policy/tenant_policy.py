"""A tenant's sign-in policy: its lockout, the networks it calls familiar, when it wants MFA.

One frozen value per tenant, validated once, stored as JSON in the broker's store and changed
with ``pta-broker tenant policy``. Tenants that never set one get the defaults.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, cast, get_args

from broker.policy.lockout import LockoutRule

MfaMode = Literal["never", "always", "unfamiliar"]
MFA_MODES: tuple[str, ...] = get_args(MfaMode)
#: A network a user signed in from successfully stays familiar this long.
DEFAULT_FAMILIAR_WINDOW = 30 * 86400.0
#: A successful sign-in makes its whole /24 (IPv4) or /56 (IPv6) familiar: one site's range
#: (a /48 can hold a whole mobile carrier's subscribers).
FAMILIAR_PREFIX_V4 = 24
FAMILIAR_PREFIX_V6 = 56
#: Configured familiar networks may not be wider than this: 0.0.0.0/0 would end the notion.
MIN_NETWORK_PREFIX = {4: 8, 6: 16}
#: The most networks a tenant may list.
MAX_NETWORKS = 256
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Addresses whose parsing is remembered: sign-ins come from the same addresses again and again.
ADDRESS_CACHE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantPolicy:
    """What the broker does around a tenant's password checks."""

    lockout: LockoutRule = field(default_factory=LockoutRule)
    #: CIDRs always familiar (the organisation's own offices and VPN).
    familiar_networks: tuple[str, ...] = ()
    familiar_window: float = DEFAULT_FAMILIAR_WINDOW
    mfa: MfaMode = "never"
    networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Parse the networks once; refuse an unknown MFA mode.

        Raises:
            ValueError: On a bad CIDR, too many of them, a bad window or MFA mode.
        """
        if self.mfa not in MFA_MODES:
            raise ValueError(f"mfa is one of {', '.join(MFA_MODES)}, not {self.mfa!r}")
        if self.familiar_window <= 0:
            raise ValueError("the familiar window must be positive")
        if len(self.familiar_networks) > MAX_NETWORKS:
            raise ValueError(f"at most {MAX_NETWORKS} familiar networks")
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.familiar_networks)
        for net in nets:
            if net.prefixlen < MIN_NETWORK_PREFIX[net.version]:
                raise ValueError(f"{net} is too wide to be one organisation's network")
        object.__setattr__(self, "networks", nets)
        object.__setattr__(self, "familiar_networks", tuple(str(n) for n in nets))

    def to_json(self) -> str:
        """Serialise for the store."""
        return json.dumps(
            {
                "lockout_threshold": self.lockout.threshold,
                "lockout_duration": self.lockout.duration,
                "lockout_max_duration": self.lockout.max_duration,
                "familiar_networks": list(self.familiar_networks),
                "familiar_window": self.familiar_window,
                "mfa": self.mfa,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> TenantPolicy:
        """Read what :meth:`to_json` wrote; keys it does not know are ignored.

        Raises:
            ValueError: When the stored values are invalid.
        """
        data: dict[str, Any] = json.loads(text)
        return cls().updated(**data)

    def updated(self, **changes: Any) -> TenantPolicy:
        """A copy with the given settings changed (the CLI's and the store's flat names).

        Raises:
            ValueError: When a value is invalid.
        """
        rule = {
            "threshold": changes.pop("lockout_threshold", self.lockout.threshold),
            "duration": changes.pop("lockout_duration", self.lockout.duration),
            "max_duration": changes.pop("lockout_max_duration", self.lockout.max_duration),
        }
        known = {f.name for f in fields(self) if f.init}
        kept = {k: v for k, v in changes.items() if k in known}
        if "familiar_networks" in kept:
            kept["familiar_networks"] = tuple(kept["familiar_networks"])
        if "familiar_window" in kept:
            kept["familiar_window"] = _seconds(kept["familiar_window"])
        if "mfa" in kept:
            kept["mfa"] = cast("MfaMode", str(kept["mfa"]))
        return replace(
            self,
            lockout=LockoutRule(
                threshold=int(rule["threshold"]),
                duration=_seconds(rule["duration"]),
                max_duration=_seconds(rule["max_duration"]),
            ),
            **kept,
        )

    def describe(self) -> dict[str, Any]:
        """The settings as operators read them (``tenant show``)."""
        described: dict[str, Any] = json.loads(self.to_json())
        return described


def _seconds(value: object) -> float:
    """A number of seconds from the CLI or the stored JSON.

    Raises:
        ValueError: When it is not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number of seconds: {value!r}")  # noqa: TRY004 - a bad setting
    return float(value)


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address as an IP; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as its IPv4.

    Dual-stack front ends report IPv4 clients that way: left mapped, every IPv4 client would
    share one IPv6 /48 (``::/48``) and be "familiar" together.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def familiar_prefix(address: str) -> str | None:
    """The network a successful sign-in from ``address`` makes familiar; None if no IP."""
    ip = _ip(address)
    if ip is None:
        return None
    bits = FAMILIAR_PREFIX_V4 if ip.version == 4 else FAMILIAR_PREFIX_V6  # noqa: PLR2004
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` lies in one of ``networks``."""
    if not networks:
        return False
    ip = _ip(address)
    return ip is not None and any(ip in net for net in networks)
