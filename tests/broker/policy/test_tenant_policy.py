"""A tenant's sign-in policy: ``broker/policy/tenant_policy.py``, plain values and JSON."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

import pytest

from broker.policy.lockout import LockoutRule
from broker.policy.tenant_policy import (
    DEFAULT_FAMILIAR_WINDOW,
    MAX_NETWORKS,
    TenantPolicy,
    familiar_prefix,
    in_networks,
)

CUSTOM = TenantPolicy(
    lockout=LockoutRule(threshold=5, duration=30.0, max_duration=900.0),
    familiar_networks=("10.0.0.0/8", "2001:db8::/32"),
    familiar_window=7 * 86400.0,
    mfa="unfamiliar",
)


class TestTenantPolicy:
    """One validated value per tenant."""

    def test_defaults(self) -> None:
        """With nothing set: the default lockout, no networks, a 30-day window, no MFA."""
        policy = TenantPolicy()
        assert policy.lockout == LockoutRule()
        assert policy.familiar_networks == ()
        assert policy.networks == ()
        assert policy.familiar_window == DEFAULT_FAMILIAR_WINDOW
        assert policy.mfa == "never"

    def test_networks_parsed_and_normalised(self) -> None:
        """CIDRs are parsed once; host bits are dropped from their text form."""
        policy = TenantPolicy(familiar_networks=("10.1.2.3/8", "2001:db8::1/32", "192.0.2.7"))
        assert policy.familiar_networks == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")
        assert policy.networks == (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("192.0.2.7/32"),
        )

    def test_equal_after_normalising(self) -> None:
        """Two policies naming the same networks differently are equal."""
        assert TenantPolicy(familiar_networks=("10.9.9.9/8",)) == TenantPolicy(
            familiar_networks=("10.0.0.0/8",)
        )

    def test_frozen(self) -> None:
        """A policy cannot be changed in place."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            CUSTOM.mfa = "never"  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            ({"mfa": "sometimes"}, "mfa is one of never, always, unfamiliar"),
            ({"familiar_window": 0.0}, "window must be positive"),
            ({"familiar_window": -1.0}, "window must be positive"),
            ({"familiar_networks": ("10.0.0.0/33",)}, "does not appear to be"),
            ({"familiar_networks": ("office",)}, "does not appear to be"),
            (
                {"familiar_networks": tuple(f"10.0.{n}.0/24" for n in range(MAX_NETWORKS + 1))},
                "at most 256",
            ),
        ],
        ids=[
            "unknown-mfa-mode",
            "zero-window",
            "negative-window",
            "bad-prefix",
            "not-a-network",
            "too-many-networks",
        ],
    )
    def test_invalid(self, settings: dict[str, Any], message: str) -> None:
        """Invalid settings are refused with ValueError saying what is wrong."""
        with pytest.raises(ValueError, match=message):
            TenantPolicy(**settings)

    def test_as_many_networks_as_allowed(self) -> None:
        """Exactly ``MAX_NETWORKS`` networks are accepted."""
        nets = tuple(f"10.{n // 256}.{n % 256}.0/24" for n in range(MAX_NETWORKS))
        assert len(TenantPolicy(familiar_networks=nets).networks) == MAX_NETWORKS


class TestTenantPolicyJson:
    """The store's form: flat JSON, read back to an equal value."""

    @pytest.mark.parametrize("policy", [TenantPolicy(), CUSTOM], ids=["defaults", "custom"])
    def test_round_trip(self, policy: TenantPolicy) -> None:
        """``from_json(to_json())`` gives an equal policy with the same networks."""
        back = TenantPolicy.from_json(policy.to_json())
        assert back == policy
        assert back.networks == policy.networks

    def test_flat_names(self) -> None:
        """The JSON uses the CLI's flat names, and ``describe`` shows the same."""
        expected = {
            "lockout_threshold": 5,
            "lockout_duration": 30.0,
            "lockout_max_duration": 900.0,
            "familiar_networks": ["10.0.0.0/8", "2001:db8::/32"],
            "familiar_window": 7 * 86400.0,
            "mfa": "unfamiliar",
        }
        assert json.loads(CUSTOM.to_json()) == expected
        assert CUSTOM.describe() == expected

    def test_missing_keys_are_defaults(self) -> None:
        """An empty or partial object fills the rest with defaults."""
        assert TenantPolicy.from_json("{}") == TenantPolicy()
        assert TenantPolicy.from_json('{"mfa": "always"}') == TenantPolicy(mfa="always")

    def test_unknown_keys_ignored(self) -> None:
        """Keys a later version may add are ignored, not fatal."""
        text = json.dumps({"lockout_threshold": 3, "risk_engine": "on", "networks": ["x"]})
        assert TenantPolicy.from_json(text) == TenantPolicy(lockout=LockoutRule(threshold=3))

    @pytest.mark.parametrize(
        "stored",
        [
            {"lockout_threshold": -1},
            {"lockout_duration": 0},
            {"lockout_duration": 120, "lockout_max_duration": 60},
            {"mfa": "maybe"},
            {"familiar_networks": ["not-a-cidr"]},
        ],
        ids=["negative-threshold", "zero-duration", "cap-below-first", "bad-mfa", "bad-cidr"],
    )
    def test_invalid_stored_values(self, stored: dict[str, Any]) -> None:
        """Invalid stored values are refused with ValueError."""
        with pytest.raises(ValueError):  # noqa: PT011 - the message is each validator's own
            TenantPolicy.from_json(json.dumps(stored))


class TestTenantPolicyUpdated:
    """Changing settings by their flat names."""

    def test_lockout_fields(self) -> None:
        """Lockout settings change one at a time; the others are kept."""
        changed = CUSTOM.updated(lockout_threshold=7)
        assert changed.lockout == LockoutRule(threshold=7, duration=30.0, max_duration=900.0)
        assert changed.familiar_networks == CUSTOM.familiar_networks
        assert changed.mfa == CUSTOM.mfa
        assert CUSTOM.lockout.threshold == 5

    def test_other_fields(self) -> None:
        """Networks (any iterable), window and MFA mode change; networks are parsed again."""
        changed = TenantPolicy().updated(
            familiar_networks=["192.0.2.9/24"], familiar_window=60.0, mfa="always"
        )
        assert changed.familiar_networks == ("192.0.2.0/24",)
        assert changed.networks == (ipaddress.ip_network("192.0.2.0/24"),)
        assert changed.familiar_window == 60.0
        assert changed.mfa == "always"

    def test_clear_networks(self) -> None:
        """An empty list of networks removes them all."""
        assert CUSTOM.updated(familiar_networks=()).networks == ()

    def test_numbers_are_coerced(self) -> None:
        """Lockout numbers given as text or int become the rule's types."""
        rule = TenantPolicy().updated(lockout_threshold="4", lockout_duration=30).lockout
        assert rule == LockoutRule(threshold=4, duration=30.0)
        assert isinstance(rule.duration, float)

    def test_unknown_names_ignored(self) -> None:
        """Names that are no setting change nothing."""
        assert TenantPolicy().updated(colour="blue", networks=("10.0.0.0/8",)) == TenantPolicy()

    @pytest.mark.parametrize(
        "changes",
        [
            {"lockout_threshold": -2},
            {"lockout_threshold": "many"},
            {"lockout_max_duration": 1.0},
            {"mfa": "sms"},
            {"familiar_window": 0.0},
            {"familiar_networks": ["300.0.0.0/8"]},
            {"familiar_window": "a week"},
        ],
        ids=[
            "negative-threshold",
            "threshold-not-a-number",
            "cap-below-first",
            "unknown-mfa",
            "zero-window",
            "bad-network",
            "window-not-a-number",
        ],
    )
    def test_invalid(self, changes: dict[str, Any]) -> None:
        """An invalid change is refused with ValueError, as documented."""
        with pytest.raises(ValueError):  # noqa: PT011 - the message is each validator's own
            TenantPolicy().updated(**changes)


class TestFamiliarPrefix:
    """The network a success makes familiar: the /24 or /56 around the address."""

    @pytest.mark.parametrize(
        ("address", "prefix"),
        [
            ("203.0.113.7", "203.0.113.0/24"),
            ("203.0.113.255", "203.0.113.0/24"),
            ("10.1.2.3", "10.1.2.0/24"),
            ("2001:db8:1:2::7", "2001:db8:1::/56"),
            ("2001:db8:1:ff:ffff::1", "2001:db8:1::/56"),
            ("", None),
            ("unix:/tmp/socket", None),
            ("203.0.113.7:443", None),
            ("::ffff:203.0.113.7", "203.0.113.0/24"),
        ],
        ids=[
            "ipv4",
            "ipv4-broadcast-end",
            "ipv4-private",
            "ipv6",
            "ipv6-same-56",
            "empty",
            "not-an-ip",
            "with-port",
            "ipv4-mapped",
        ],
    )
    def test_familiar_prefix(self, address: str, prefix: str | None) -> None:
        """IPv4 → its /24, IPv6 → its /56, anything else → None."""
        assert familiar_prefix(address) == prefix

    def test_neighbours_share_a_prefix(self) -> None:
        """Two addresses of one site share a prefix; the next /24 does not."""
        assert familiar_prefix("198.51.100.1") == familiar_prefix("198.51.100.200")
        assert familiar_prefix("198.51.100.1") != familiar_prefix("198.51.101.1")


class TestInNetworks:
    """Whether an address lies in a tenant's configured networks."""

    NETWORKS = CUSTOM.networks

    @pytest.mark.parametrize(
        ("address", "inside"),
        [
            ("10.1.2.3", True),
            ("10.255.255.255", True),
            ("11.0.0.1", False),
            ("2001:db8:ffff::1", True),
            ("2001:db9::1", False),
            ("", False),
            ("office", False),
        ],
        ids=["v4-inside", "v4-edge", "v4-outside", "v6-inside", "v6-outside", "empty", "not-ip"],
    )
    def test_in_networks(self, address: str, *, inside: bool) -> None:
        """Only a real address inside one of the networks is in them."""
        assert in_networks(address, self.NETWORKS) is inside

    def test_no_networks(self) -> None:
        """With no networks configured nothing is inside."""
        assert not in_networks("10.1.2.3", ())


class TestNetworkWidth:
    """A familiar network is one organisation's, not the internet."""

    @pytest.mark.parametrize(
        "network",
        ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2000::/3"],
        ids=["v4-all", "v4-7", "v6-all", "v6-3"],
    )
    def test_too_wide_refused(self, network: str) -> None:
        """Wider than /8 (IPv4) or /16 (IPv6) is refused."""
        with pytest.raises(ValueError, match="too wide"):
            TenantPolicy(familiar_networks=(network,))

    def test_widest_allowed(self) -> None:
        """A /8 and a /16 are fine."""
        assert TenantPolicy(familiar_networks=("10.0.0.0/8", "2001:db8::/16")).networks
