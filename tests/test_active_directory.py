"""Sign-ins and password changes against a real Active Directory (Samba AD DC), end to end.

Every AD state the outcome table names is produced on the domain controller and checked by a
real LDAPS bind through client -> broker -> agent. Skipped, saying why, only where Samba
cannot run (not installed, or not root); ``make test`` installs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pta.v1 import outcome_pb2
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, change_password
from tooling.samba import AdUser, SambaDC, samba_missing_reason
from tooling.samba_host import LOCKOUT_THRESHOLD

if TYPE_CHECKING:
    from collections.abc import Iterator

Outcome = outcome_pb2.Outcome
pytestmark = pytest.mark.skipif(
    samba_missing_reason() is not None, reason=str(samba_missing_reason())
)

PASSWORD = secret("Ad-pw-20!x")
NEW_PASSWORD = secret("Ad-new-pw-21!y")
#: sAMAccountName -> (state on the DC, the outcome its right password gets)
STATES = {
    "adnormal": ("normal", "SUCCESS"),
    "addisabled": ("disabled", "ACCOUNT_DISABLED"),
    "admustchange": ("must_change", "PASSWORD_MUST_CHANGE"),
    "adexpired": ("expired", "PASSWORD_EXPIRED"),  # changed by the last test
    "adacctexpired": ("account_expired", "ACCOUNT_EXPIRED"),
    "adlocked": ("locked", "ACCOUNT_LOCKED"),
    "adhours": ("logon_hours", "ACCOUNT_RESTRICTED"),
}
EXTRA = ("adchanger", "adchanger2", "adwrong")


@pytest.fixture(scope="module")
def domain_controller() -> Iterator[SambaDC]:
    """One Samba AD DC for the module, users in every state.

    Its "old password allowed period" is 0: by default (as on Windows) AD lets a changed
    password keep binding for an hour, and with that the tests could not tell a password
    pta replaced from one it left in place.
    """
    users = [
        AdUser(sam=sam, password=PASSWORD, state=state)  # type: ignore[arg-type]
        for sam, (state, _) in STATES.items()
    ]
    users += [AdUser(sam=sam, password=PASSWORD) for sam in EXTRA]
    with SambaDC(users=users, old_password_minutes=0) as dc:
        yield dc


@pytest.fixture(scope="module")
def ad_agent(
    broker: BrokerProcess, domain_controller: SambaDC, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """Tenant ``adcorp`` owning the AD's UPN suffix, one agent of kind ``ad`` over LDAPS.

    The service account's password file lives outside the run directory, and the password is
    registered: the final scan proves the agent wrote it nowhere.
    """
    dc = domain_controller
    broker.add_tenant("adcorp", dc.upn_suffix)
    secret_file = tmp_path_factory.mktemp("ad-bind") / "ad-bind.pw"
    secret_file.write_text(known(dc.admin_password))
    secret_file.chmod(0o600)
    agent = AgentProcess.start(
        broker,
        None,
        "adcorp",
        "agent-ad",
        *("--kind", "ad", "--ldap-url", dc.ldaps_url, "--base-dn", dc.base_dn),
        *("--bind-dn", dc.admin_dn, "--bind-password-file", str(secret_file)),
        *("--ca-file", str(dc.ca_file)),
    )
    yield agent
    agent.stop()


def _change(broker: BrokerProcess, username: str, old: str, new: str) -> int:
    return change_password(broker, username, old, new, timeout=20).outcome


@pytest.mark.usefixtures("ad_agent")
class TestActiveDirectoryOutcomes:
    """Each AD bind subcode reaches the user as its own outcome."""

    @pytest.mark.parametrize("sam", list(STATES), ids=[s for s, _ in STATES.values()])
    def test_state(self, broker: BrokerProcess, domain_controller: SambaDC, sam: str) -> None:
        """The right password of an account in each state gets that state's outcome."""
        response = broker.sign_in(domain_controller.upn(sam), PASSWORD)
        assert Outcome.Name(response.outcome) == STATES[sam][1]

    def test_wrong_password(self, broker: BrokerProcess, domain_controller: SambaDC) -> None:
        """52e: a wrong password."""
        wrong = secret("not-the-ad-pw")
        response = broker.sign_in(domain_controller.upn("adwrong"), wrong)
        assert response.outcome == Outcome.INVALID_CREDENTIALS

    def test_unknown_user_told_apart_by_search(
        self, broker: BrokerProcess, domain_controller: SambaDC
    ) -> None:
        """Samba answers 52e for users it lacks: the agent's own search tells them apart."""
        response = broker.sign_in(f"nobody@{domain_controller.upn_suffix}", PASSWORD)
        assert response.outcome == Outcome.INVALID_CREDENTIALS
        (event,) = [
            e
            for e in broker.log_events("signin.completed")
            if e["request_id"] == response.request_id
        ]
        assert event["outcome"] == "UNKNOWN_USER"


class TestActiveDirectoryLockoutPolicy:
    """The agent tells the broker the domain's lockout threshold."""

    def test_domain_threshold_reported(
        self, broker: BrokerProcess, domain_controller: SambaDC, ad_agent: AgentProcess
    ) -> None:
        """The domain object's lockoutThreshold, read as the service account, is reported."""
        dc = domain_controller
        policies = broker.wait_for_policies("adcorp", ad_agent.agent_id, {dc.upn_suffix})
        policy = policies[dc.upn_suffix]
        assert (policy.known, policy.lockout_threshold) == (True, LOCKOUT_THRESHOLD)
        assert policy.source.lower() == f"ad lockoutthreshold on {dc.base_dn}".lower()


@pytest.mark.usefixtures("ad_agent")
class TestActiveDirectoryPasswordChange:
    """unicodePwd changes, as the user, over LDAPS."""

    def test_change_then_sign_in(self, broker: BrokerProcess, domain_controller: SambaDC) -> None:
        """A normal user changes the password; the new one signs in, the old one does not.

        (On a directory with AD's default "old password allowed period" the old one would
        still bind for an hour: docs/directories.md.)
        """
        upn = domain_controller.upn("adchanger")
        assert _change(broker, upn, PASSWORD, NEW_PASSWORD) == Outcome.SUCCESS
        assert broker.sign_in(upn, NEW_PASSWORD).outcome == Outcome.SUCCESS
        assert broker.sign_in(upn, PASSWORD).outcome == Outcome.INVALID_CREDENTIALS

    def test_policy_rejection(self, broker: BrokerProcess, domain_controller: SambaDC) -> None:
        """A new password AD's policy refuses (too simple) is PASSWORD_REJECTED.

        Lower-case letters only: the broker's banned-password check lets it through (nothing
        in it is a common password), AD's complexity rule does not.
        """
        upn = domain_controller.upn("adchanger2")
        assert _change(broker, upn, PASSWORD, known("zqxvbkmwtr")) == Outcome.PASSWORD_REJECTED
        assert broker.sign_in(upn, PASSWORD).outcome == Outcome.SUCCESS

    def test_must_change_user_changes_then_signs_in(
        self, broker: BrokerProcess, domain_controller: SambaDC
    ) -> None:
        """773: the user cannot bind, but can change the password, then sign in."""
        upn = domain_controller.upn("admustchange")
        newer = secret("Ad-newer-pw-22!z")
        assert _change(broker, upn, PASSWORD, newer) == Outcome.SUCCESS
        assert broker.sign_in(upn, newer).outcome == Outcome.SUCCESS

    def test_expired_user_changes_then_signs_in(
        self, broker: BrokerProcess, domain_controller: SambaDC
    ) -> None:
        """532: an expired password can still be changed, then the new one signs in."""
        upn = domain_controller.upn("adexpired")
        newest = secret("Ad-newest-pw-23!w")
        assert _change(broker, upn, PASSWORD, newest) == Outcome.SUCCESS
        assert broker.sign_in(upn, newest).outcome == Outcome.SUCCESS
