"""``agent/lockout.py``: what a policy entry means, and the report loop against real slapd."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import ldap3
import pytest

from agent import lockout
from agent.config import DirectoryConfig
from agent.directory import LdapDirectory
from agent.lockout import LockoutPolicy, PolicyReporter
from tooling.slapd import Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from pta.v1 import agent_pb2

POLICY_DN = "cn=default,ou=policies,dc=example,dc=com"
STRICT_DN = "cn=strict,ou=policies,dc=example,dc=com"
AD_SOURCE = "AD lockoutThreshold on DC=ad,DC=example"


def _attrs(max_failure: str | None, lockout_flag: str | None) -> Mapping[str, Sequence[str]]:
    values = {"pwdmaxfailure": max_failure, "pwdlockout": lockout_flag}
    return {name: [value] for name, value in values.items() if value is not None}


class TestFromPpolicy:
    """pwdMaxFailure counts only with pwdLockout TRUE; the lowest locking entry wins."""

    @pytest.mark.parametrize(
        ("max_failure", "lockout_flag", "expected"),
        [
            ("5", "TRUE", 5),
            ("5", "FALSE", 0),
            ("5", None, 0),  # pwdLockout absent means FALSE
            ("0", "TRUE", 0),
            (None, "TRUE", 0),
            ("3", "true", 3),
        ],
        ids=["locks", "lockout-false", "lockout-absent", "max-zero", "max-absent", "any-case"],
    )
    def test_one_entry(
        self, max_failure: str | None, lockout_flag: str | None, expected: int
    ) -> None:
        """One entry's threshold, always known."""
        policy = lockout.from_ppolicy([(POLICY_DN, _attrs(max_failure, lockout_flag))], "here")
        assert (policy.known, policy.threshold) == (True, expected)
        assert POLICY_DN in policy.source

    def test_lowest_locking_entry(self) -> None:
        """Several entries: the lowest threshold that locks, named in the source."""
        entries = [
            (POLICY_DN, _attrs("5", "TRUE")),
            (STRICT_DN, _attrs("3", "TRUE")),
            ("cn=lax,dc=example,dc=com", _attrs("1", "FALSE")),
        ]
        policy = lockout.from_ppolicy(entries, "under dc=example,dc=com")
        assert policy == LockoutPolicy(
            known=True, threshold=3, source=f"pwdMaxFailure on {STRICT_DN}"
        )

    def test_none_locks(self) -> None:
        """Several entries, none locking: 0."""
        entries = [(POLICY_DN, _attrs("5", "FALSE")), (STRICT_DN, _attrs("0", "TRUE"))]
        policy = lockout.from_ppolicy(entries, "under dc=example,dc=com")
        assert (policy.known, policy.threshold) == (True, 0)
        assert "none of 2" in policy.source

    @pytest.mark.parametrize(
        "entries",
        [[], [(POLICY_DN, _attrs("many", "TRUE"))], [(POLICY_DN, _attrs("-1", "TRUE"))]],
        ids=["none-found", "not-a-number", "negative"],
    )
    def test_unknown(self, entries: list[lockout.Entry]) -> None:
        """Nothing found, or nothing a count can be made of: unknown."""
        policy = lockout.from_ppolicy(entries, "under dc=example,dc=com")
        assert (policy.known, policy.threshold) == (False, 0)
        assert policy.source


class TestFromAd:
    """The domain object's lockoutThreshold; 0 means never locks."""

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            (["5"], LockoutPolicy(known=True, threshold=5, source=f"{AD_SOURCE}")),
            (["0"], LockoutPolicy(known=True, threshold=0, source=f"{AD_SOURCE}")),
            ([], lockout.unknown("lockoutThreshold not readable on DC=ad,DC=example")),
            (["x"], lockout.unknown("lockoutThreshold is not a count on DC=ad,DC=example")),
            (
                ["4294967296"],
                lockout.unknown("lockoutThreshold is not a count on DC=ad,DC=example"),
            ),
        ],
        ids=["five", "never", "not-readable", "garbage", "too-large"],
    )
    def test_values(self, values: list[str], expected: LockoutPolicy) -> None:
        """Each value read becomes its policy."""
        assert lockout.from_ad("DC=ad,DC=example", values) == expected


@pytest.fixture
def own_slapd() -> Iterator[Slapd]:
    """A slapd of this test's own, whose policy the test changes."""
    with Slapd(users=[]) as server:
        yield server


def _set_max_failure(server: Slapd, value: str) -> None:
    conn = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE), server.admin_dn, server.admin_password
    )
    assert conn.bind()
    try:
        changes = {"pwdMaxFailure": [(ldap3.MODIFY_REPLACE, [value])]}
        assert conn.modify(server.policy_dn, changes)  # type: ignore[no-untyped-call]  # bare stub
    finally:
        conn.unbind()


class Sent:
    """Collects the reports the loop sends, and wakes a test waiting for the n-th."""

    def __init__(self) -> None:
        """Nothing sent yet."""
        self.reports: list[agent_pb2.DirectoryReport] = []
        self._grew = asyncio.Event()

    def __call__(self, report: agent_pb2.DirectoryReport) -> None:
        """Keep one report (the loop's ``send``)."""
        self.reports.append(report)
        self._grew.set()

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` reports were sent (5 s at most)."""
        async with asyncio.timeout(5):
            while len(self.reports) < count:
                self._grew.clear()
                await self._grew.wait()

    def thresholds(self) -> list[int]:
        """Every sent policy's threshold, in order."""
        return [p.lockout_threshold for r in self.reports for p in r.policies]


class TestReporting:
    """One policy per served domain; sent at once, then again only when it changed."""

    async def test_one_policy_per_domain(self, slapd: Slapd) -> None:
        """Domains sharing a directory read it once; a domain without one is left out."""
        shared = LdapDirectory(DirectoryConfig(urls=(slapd.url,), base_dn=slapd.base_dn))
        down = LdapDirectory(
            DirectoryConfig(urls=(f"ldap://127.0.0.1:{free_port()}",), base_dn=slapd.base_dn)
        )
        chosen = {"a.example": shared, "b.example": shared, "down.example": down}
        try:
            report = await PolicyReporter(chosen.get).report(
                ["b.example", "a.example", "down.example", "unserved.example"]
            )
        finally:
            shared.close()
            down.close()
        summary = [(p.domain, p.known, p.lockout_threshold) for p in report.policies]
        assert summary == [
            ("a.example", True, 5),
            ("b.example", True, 5),
            ("down.example", False, 0),
        ]

    async def test_sent_again_only_when_changed(self, own_slapd: Slapd) -> None:
        """Re-reads that find the same policy send nothing; a changed one is sent."""
        directory = LdapDirectory(DirectoryConfig(urls=(own_slapd.url,), base_dn=own_slapd.base_dn))
        sent = Sent()
        loop = asyncio.create_task(
            lockout.keep_reporting(
                PolicyReporter(lambda _: directory), ["example.com"], sent, interval=0.02
            )
        )
        try:
            await asyncio.sleep(0.3)  # Many re-reads, one report.
            assert sent.thresholds() == [5]
            await asyncio.to_thread(_set_max_failure, own_slapd, "3")
            await sent.wait_for(2)
            assert sent.thresholds() == [5, 3]
        finally:
            loop.cancel()
            directory.close()
        with pytest.raises(asyncio.CancelledError):
            await loop

    async def test_a_failing_read_does_not_end_the_loop(self, slapd: Slapd) -> None:
        """A read that raises is logged and tried again; the loop (and stream) goes on."""
        directory = LdapDirectory(DirectoryConfig(urls=(slapd.url,), base_dn=slapd.base_dn))
        calls = 0

        def directory_for(_: str) -> LdapDirectory:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("first read breaks")
            return directory

        sent = Sent()
        loop = asyncio.create_task(
            lockout.keep_reporting(
                PolicyReporter(directory_for), ["example.com"], sent, interval=0.02
            )
        )
        try:
            await sent.wait_for(1)
        finally:
            loop.cancel()
            directory.close()
        with pytest.raises(asyncio.CancelledError):
            await loop
        assert sent.thresholds() == [5]
