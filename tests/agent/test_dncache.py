"""The login -> DN cache: bounded, aging, and used by real binds against slapd."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ldap3
import pytest

from agent.config import DirectoryConfig
from agent.directory import LdapDirectory
from agent.dncache import DnCache
from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

Outcome = outcome_pb2.Outcome
MOVER = secret("Mover-pw-1")
STAYER = secret("Stayer-pw-1")


class TestDnCache:
    """Pure behaviour of the cache."""

    def test_remembers_until_ttl(self) -> None:
        """A DN is returned until its time to live has passed."""
        now = [0.0]
        cache = DnCache(ttl=10, clock=lambda: now[0])
        cache.put("alice", "uid=alice,dc=x")
        now[0] = 9.9
        assert cache.get("alice") == "uid=alice,dc=x"
        now[0] = 10.0
        assert cache.get("alice") is None

    def test_bounded_least_recently_used(self) -> None:
        """Beyond its size the least recently used name is dropped."""
        cache = DnCache(size=2)
        cache.put("a", "A")
        cache.put("b", "B")
        assert cache.get("a") == "A"  # "b" is now the least recently used
        cache.put("c", "C")
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
        assert len(cache) == 2

    def test_forget_and_disabled(self) -> None:
        """``forget`` drops a name; size 0 caches nothing."""
        cache = DnCache()
        cache.put("a", "A")
        cache.forget("a")
        assert cache.get("a") is None
        off = DnCache(size=0)
        off.put("a", "A")
        assert off.get("a") is None


@pytest.fixture(scope="module")
def directory_server() -> Iterator[Slapd]:
    """A slapd of its own: these tests rename users."""
    users = [
        DirectoryUser(uid="mover", password=MOVER),
        DirectoryUser(uid="stayer", password=STAYER),
    ]
    with Slapd(users=users) as server:
        yield server


@pytest.fixture
async def ldap_directory(directory_server: Slapd) -> AsyncIterator[LdapDirectory]:
    """The agent's directory client against that slapd, closed on the test's event loop."""
    directory = LdapDirectory(
        DirectoryConfig(urls=(directory_server.url,), base_dn=directory_server.base_dn)
    )
    yield directory
    directory.close()


class TestCachedBinds:
    """With the cache, a stale DN never gives a wrong answer nor a double failed bind."""

    async def test_renamed_user_still_signs_in(
        self, directory_server: Slapd, ldap_directory: LdapDirectory
    ) -> None:
        """After a rename, the cached DN fails, the user is found again, the bind succeeds."""
        assert (await ldap_directory.verify("mover@x", MOVER)).outcome == Outcome.SUCCESS
        assert ldap_directory._dns.get("mover") == directory_server.user_dn("mover")
        admin = ldap3.Connection(
            ldap3.Server(directory_server.url, get_info=ldap3.NONE),
            directory_server.admin_dn,
            directory_server.admin_password,
            auto_bind=True,
        )
        admin.add(f"ou=moved,{directory_server.base_dn}", "organizationalUnit")  # type: ignore[no-untyped-call]
        assert admin.modify_dn(
            directory_server.user_dn("mover"),
            "uid=mover",
            new_superior=f"ou=moved,{directory_server.base_dn}",
        )
        admin.unbind()
        verdict = await ldap_directory.verify("mover@x", MOVER)
        assert verdict.outcome == Outcome.SUCCESS
        assert ldap_directory._dns.get("mover") == f"uid=mover,ou=moved,{directory_server.base_dn}"

    async def test_wrong_password_with_cached_dn(self, ldap_directory: LdapDirectory) -> None:
        """A wrong password on a cached, current DN is INVALID_CREDENTIALS, cache kept."""
        assert (await ldap_directory.verify("stayer@x", STAYER)).outcome == Outcome.SUCCESS
        assert (await ldap_directory.verify("stayer@x", "nope")).outcome == (
            Outcome.INVALID_CREDENTIALS
        )
        assert ldap_directory._dns.get("stayer") is not None

    async def test_unknown_user_is_not_cached(self, ldap_directory: LdapDirectory) -> None:
        """A name the directory lacks is UNKNOWN_USER and leaves nothing in the cache."""
        assert (
            await ldap_directory.verify("ghost@x", secret("pw"))
        ).outcome == Outcome.UNKNOWN_USER
        assert ldap_directory._dns.get("ghost") is None
