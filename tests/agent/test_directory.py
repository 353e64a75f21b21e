"""``agent/directory.py``: reading a directory's lockout policy, against real slapd servers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from agent import password_change
from agent.config import DirectoryConfig
from agent.directory import Check, LdapDirectory
from pta.errors import DirectoryUnavailable
from pta.v1 import outcome_pb2
from tests.conftest import USERS
from tests.secrets_registry import secret
from tooling.slapd import DirectoryUser, Slapd, free_port

Outcome = outcome_pb2.Outcome

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agent.lockout import LockoutPolicy

SERVICE_PASSWORD = secret("Svc-policy-pw-1!")


@pytest.fixture(scope="module")
def private_slapd() -> Iterator[Slapd]:
    """A slapd whose policies only bound users (its service account ``svc``) may read."""
    users = [DirectoryUser(uid="svc", password=SERVICE_PASSWORD)]
    with Slapd(users=users, private_policies=True) as server:
        yield server


@pytest.fixture(scope="module")
def unlocking_slapd() -> Iterator[Slapd]:
    """A slapd whose default policy counts failures but never locks."""
    with Slapd(users=[], policy={"pwdLockout": "FALSE"}) as server:
        yield server


async def _read(**values: Any) -> LockoutPolicy:
    directory = LdapDirectory(DirectoryConfig(**values))
    try:
        return await directory.lockout_policy()
    finally:
        directory.close()


class TestLockoutPolicy:
    """What :meth:`LdapDirectory.lockout_policy` reads, and what it makes of failures."""

    async def test_searched_under_base_dn(self, slapd: Slapd) -> None:
        """Without a policy DN, the pwdPolicy entries under the base DN are found."""
        policy = await _read(urls=(slapd.url,), base_dn=slapd.base_dn)
        assert (policy.known, policy.threshold) == (True, 5)
        assert policy.source == f"pwdMaxFailure on {slapd.policy_dn}"

    async def test_named_policy_dn(self, slapd: Slapd) -> None:
        """``password_policy_dn`` is read as it is named."""
        policy = await _read(
            urls=(slapd.url,), base_dn=slapd.base_dn, password_policy_dn=slapd.policy_dn
        )
        assert (policy.known, policy.threshold) == (True, 5)
        assert slapd.policy_dn in policy.source

    async def test_lockout_false_never_locks(self, unlocking_slapd: Slapd) -> None:
        """``pwdLockout: FALSE`` means 0 (never locks), whatever pwdMaxFailure says."""
        policy = await _read(urls=(unlocking_slapd.url,), base_dn=unlocking_slapd.base_dn)
        assert (policy.known, policy.threshold) == (True, 0)
        assert policy.source == f"pwdLockout FALSE on {unlocking_slapd.policy_dn}"

    @pytest.mark.parametrize(
        ("where", "reason"),
        [
            ("no-policy-under-base", "no readable pwdPolicy entry"),
            ("missing-policy-dn", "noSuchObject"),
            ("missing-base-dn", "noSuchObject"),
        ],
        ids=["no-policy-under-base", "missing-policy-dn", "missing-base-dn"],
    )
    async def test_absent_is_unknown(self, slapd: Slapd, where: str, reason: str) -> None:
        """No policy entry where the agent looks: known false, and the reason says why."""
        values: dict[str, Any] = {
            "no-policy-under-base": {"base_dn": slapd.people_dn},
            "missing-policy-dn": {
                "base_dn": slapd.base_dn,
                "password_policy_dn": f"cn=missing,ou=policies,{slapd.base_dn}",
            },
            "missing-base-dn": {"base_dn": "dc=elsewhere,dc=example"},
        }[where]
        policy = await _read(urls=(slapd.url,), **values)
        assert (policy.known, policy.threshold) == (False, 0)
        assert reason in policy.source

    async def test_hidden_from_anonymous(self, private_slapd: Slapd) -> None:
        """Policies an anonymous search cannot see are unknown, not "never locks"."""
        policy = await _read(urls=(private_slapd.url,), base_dn=private_slapd.base_dn)
        assert not policy.known
        named = await _read(
            urls=(private_slapd.url,),
            base_dn=private_slapd.base_dn,
            password_policy_dn=private_slapd.policy_dn,
        )
        assert not named.known

    async def test_service_account_reads_hidden_policy(self, private_slapd: Slapd) -> None:
        """The service account the agent searches with reads what anonymous cannot."""
        policy = await _read(
            urls=(private_slapd.url,),
            base_dn=private_slapd.base_dn,
            bind_dn=private_slapd.user_dn("svc"),
            bind_password=SERVICE_PASSWORD,
        )
        assert (policy.known, policy.threshold) == (True, 5)

    async def test_wrong_service_password_is_unknown(self, private_slapd: Slapd) -> None:
        """A service account the directory refuses: unknown, the password nowhere in it."""
        wrong = secret("Svc-wrong-pw-2!")
        policy = await _read(
            urls=(private_slapd.url,),
            base_dn=private_slapd.base_dn,
            bind_dn=private_slapd.user_dn("svc"),
            bind_password=wrong,
        )
        assert not policy.known
        assert "invalidCredentials" in policy.source
        assert wrong not in policy.source

    async def test_directory_down_is_unknown(self) -> None:
        """Nothing listening: unknown at once, no exception."""
        policy = await _read(urls=(f"ldap://127.0.0.1:{free_port()}",), base_dn="dc=example,dc=com")
        assert not policy.known
        assert policy.source.startswith("could not read")

    async def test_dropped_connection_is_replaced(self, unlocking_slapd: Slapd) -> None:
        """A search connection the server dropped while idle is reopened once, not reported."""
        directory = LdapDirectory(
            DirectoryConfig(
                urls=(unlocking_slapd.url,), base_dn=unlocking_slapd.base_dn, pool_size=1
            )
        )
        try:
            assert (await directory.lockout_policy()).known
            unlocking_slapd.pause()
            unlocking_slapd.resume()
            assert (await directory.lockout_policy()).known
        finally:
            directory.close()


class TestCheckAll:
    """A batch of checks is answered in order, its checks spread over the worker threads."""

    async def test_answers_in_order(self, slapd: Slapd) -> None:
        """Right and wrong (unknown) users, mixed: each check gets its own verdict, in order."""
        directory = LdapDirectory(
            DirectoryConfig(urls=(slapd.url,), base_dn=slapd.base_dn, pool_size=3)
        )
        users = {"alice": USERS["alice"], "bob": USERS["bob"], "carol": USERS["carol"]}
        checks = [
            Check(f"{uid}@example.com", pw) if n % 2 == 0 else Check(f"nobody{n}@example.com", "x")
            for n, (uid, pw) in enumerate(list(users.items()) * 3)
        ]
        try:
            verdicts = await directory.check_all(checks)
        finally:
            directory.close()
        expected = [
            Outcome.SUCCESS if n % 2 == 0 else Outcome.UNKNOWN_USER for n in range(len(checks))
        ]
        assert [getattr(v, "outcome", v) for v in verdicts] == expected

    async def test_a_slow_directory_does_not_serialise_the_batch(self) -> None:
        """Against a server that never answers, a batch's checks wait side by side.

        Each worker thread opens its own connection: with the checks side by side the silent
        server is dialled four times at once; one after another, a receive timeout apart.
        """
        with socket.create_server(("127.0.0.1", 0)) as silent:
            held: list[socket.socket] = []
            dialled: list[float] = []

            def accept() -> None:
                silent.settimeout(0.2)
                deadline = time.monotonic() + 10
                while len(held) < 4 and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        held.append(silent.accept()[0])
                        dialled.append(time.monotonic())

            acceptor = threading.Thread(target=accept, daemon=True)
            acceptor.start()
            port = silent.getsockname()[1]
            directory = LdapDirectory(
                DirectoryConfig(
                    urls=(f"ldap://127.0.0.1:{port}",),
                    base_dn="dc=example,dc=com",
                    pool_size=4,
                    receive_timeout=2.0,
                )
            )
            try:
                verdicts = await directory.check_all(
                    [Check(f"user{n}@example.com", secret("pw")) for n in range(4)]
                )
            finally:
                directory.close()
                acceptor.join(timeout=15)
                for conn in held:
                    conn.close()
        assert all(isinstance(v, DirectoryUnavailable) for v in verdicts), verdicts
        assert len(dialled) == 4
        assert max(dialled) - min(dialled) < 1.0  # Serially they would be 2 s apart.


class TestChangeVerdict:
    """What a password change's LDAP result becomes (slapd refusing one: test_password_change)."""

    @pytest.mark.parametrize(
        ("result", "outcome"),
        [
            ({"result": 0}, Outcome.SUCCESS),
            ({"result": 49, "message": ""}, Outcome.INVALID_CREDENTIALS),
            ({"result": 19, "message": "Password is too short"}, Outcome.PASSWORD_REJECTED),
            ({"result": 50, "description": "insufficientAccessRights"}, Outcome.CHANGE_REFUSED),
            (
                {
                    "result": 53,
                    "description": "unwillingToPerform",
                    "message": "unwilling to verify old password",
                },
                Outcome.CHANGE_REFUSED,
            ),
            ({"result": 8, "description": "strongerAuthRequired"}, Outcome.CHANGE_REFUSED),
            ({"result": 51, "description": "busy"}, Outcome.DIRECTORY_UNAVAILABLE),
            ({"result": 52, "description": "unavailable"}, Outcome.DIRECTORY_UNAVAILABLE),
            ({}, Outcome.DIRECTORY_UNAVAILABLE),
        ],
        ids=["ok", "wrong-old", "policy", "no-write", "unwilling", "tls", "busy", "down", "none"],
    )
    def test_outcome(self, result: dict[str, Any], outcome: int) -> None:
        """Only a busy or silent server is worth trying again; a refusal is said as one."""
        assert password_change.change_verdict(result).outcome == outcome

    def test_refusal_is_a_warning_with_the_directorys_words(self) -> None:
        """The operator learns the result code and the diagnostic; the user, the result's name."""
        result = {"result": 53, "description": "unwillingToPerform", "message": "no, not you"}
        with capture_logs() as logs:
            verdict = password_change.change_verdict(result)
        assert verdict.message == "unwillingToPerform"
        assert logs == [
            {
                "event": "password_change.refused_by_directory",
                "log_level": "warning",
                "result_code": 53,
                "result": "unwillingToPerform",
                "diagnostic": "no, not you",
            }
        ]
