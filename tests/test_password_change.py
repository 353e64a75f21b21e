"""Self-service password change, written back to the directory by the agent, as the user."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from pta.v1 import outcome_pb2
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, change_password, signin_cli
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pta.v1 import signin_pb2

Outcome = outcome_pb2.Outcome
PAT = secret("Pat-pw-11+")
PAT_NEW = secret("Pat-new-pw-13")
RENA = secret("Rena-pw-12=")
RENA_NEW = secret("Rena-new-pw-14")
EXPO = secret("Expo-pw-15%")
CARL = secret("Carl-pw-16^")
CARL_NEW = secret("Carl-new-pw-17")


@pytest.fixture(scope="module")
def change_directory() -> Iterator[Slapd]:
    """A slapd of its own (passwords change here), with the default password policy."""
    users = [
        DirectoryUser(uid="pat", password=PAT),
        DirectoryUser(uid="rena", password=RENA, must_change=True),
        DirectoryUser(uid="expo", password=EXPO, expired=True),
        DirectoryUser(uid="carl", password=CARL),
    ]
    with Slapd(users=users) as server:
        yield server


@pytest.fixture(scope="module")
def change_agent(broker: BrokerProcess, change_directory: Slapd) -> Iterator[AgentProcess]:
    """Tenant ``chg`` with one agent on that directory."""
    broker.add_tenant("chg", "chg.example")
    agent = AgentProcess.start(broker, change_directory, "chg", "agent-chg")
    yield agent
    agent.stop()


def change(
    broker: BrokerProcess, user: str, old: str, new: str
) -> signin_pb2.ChangePasswordResponse:
    """Call ChangePassword once for a user of ``chg.example``."""
    return change_password(broker, f"{user}@chg.example", old, new)


@pytest.mark.usefixtures("change_agent")
class TestChangePassword:
    """Each answer a password change can get, against a real OpenLDAP with ppolicy."""

    def test_change_then_sign_in(self, broker: BrokerProcess) -> None:
        """After a change the new password signs in and the old one no longer does."""
        response = change(broker, "pat", PAT, PAT_NEW)
        assert (Outcome.Name(response.outcome), response.message) == ("SUCCESS", "password changed")
        assert broker.sign_in("pat@chg.example", PAT_NEW).outcome == Outcome.SUCCESS
        assert broker.sign_in("pat@chg.example", PAT).outcome == Outcome.INVALID_CREDENTIALS

    def test_wrong_old_password(self, broker: BrokerProcess) -> None:
        """A wrong old password changes nothing."""
        wrong = secret("not-carls-pw")
        assert change(broker, "carl", wrong, CARL_NEW).outcome == Outcome.INVALID_CREDENTIALS
        assert broker.sign_in("carl@chg.example", CARL).outcome == Outcome.SUCCESS

    @pytest.mark.parametrize(
        ("new", "reason"),
        [(known("Zq7#kLm"), "too short"), (CARL, "used before")],
        ids=["too-short", "in-history"],
    )
    def test_policy_rejection_says_why(self, broker: BrokerProcess, new: str, reason: str) -> None:
        """The directory's policy refuses the new password, and the message says why."""
        response = change(broker, "carl", CARL, new)
        assert response.outcome == Outcome.PASSWORD_REJECTED
        assert reason in response.message
        assert broker.sign_in("carl@chg.example", CARL).outcome == Outcome.SUCCESS

    def test_must_change_user_changes_then_signs_in(self, broker: BrokerProcess) -> None:
        """A user told to change their password can, and then signs in."""
        assert broker.sign_in("rena@chg.example", RENA).outcome == Outcome.PASSWORD_MUST_CHANGE
        assert change(broker, "rena", RENA, RENA_NEW).outcome == Outcome.SUCCESS
        assert broker.sign_in("rena@chg.example", RENA_NEW).outcome == Outcome.SUCCESS

    def test_expired_without_grace_is_reported(self, broker: BrokerProcess) -> None:
        """OpenLDAP lets no one bind on an expired password without grace logins: said so."""
        new = secret("Expo-new-pw-18")
        assert change(broker, "expo", EXPO, new).outcome == Outcome.PASSWORD_EXPIRED

    def test_cli_change_password(self, broker: BrokerProcess) -> None:
        """``pta-signin --change-password`` reads old and new from stdin and exits 0."""
        newer = secret("Pat-newer-pw-19")
        done = signin_cli(broker, "pat@chg.example", f"{PAT_NEW}\n{newer}\n", "--change-password")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: password changed" in done.stdout
        assert broker.sign_in("pat@chg.example", newer).outcome == Outcome.SUCCESS


DEAN = secret("Dean-pw-41+")


@pytest.fixture(scope="module")
def locked_down_agent(broker: BrokerProcess) -> Iterator[AgentProcess]:
    """Tenant ``chgacl``: a slapd whose ACL, like slapd's default, lets no user write a password."""
    with Slapd(users=[DirectoryUser(uid="dean", password=DEAN)], self_service=False) as server:
        broker.add_tenant("chgacl", "chgacl.example")
        agent = AgentProcess.start(broker, server, "chgacl", "agent-chgacl")
        yield agent
        agent.stop()


class TestDirectoryRefusesTheChange:
    """A change the directory refuses for a reason other than its password policy."""

    def test_said_so_and_logged(
        self, broker: BrokerProcess, locked_down_agent: AgentProcess
    ) -> None:
        """CHANGE_REFUSED, not "try again"; the agent warns with the directory's code and words."""
        new = secret("Dean-new-pw-42")
        response = change_password(broker, "dean@chgacl.example", DEAN, new)
        assert Outcome.Name(response.outcome) == "CHANGE_REFUSED"
        assert response.message == (
            "the organisation's directory refused to change the password, for a reason other"
            " than its password rules: ask an administrator (insufficientAccessRights)"
        )
        assert "try again" not in response.message
        (warning,) = locked_down_agent.log_events("password_change.refused_by_directory")
        assert warning["level"] == "warning"
        assert (warning["result_code"], warning["result"]) == (50, "insufficientAccessRights")
        assert "diagnostic" in warning
        line = json.dumps(warning)
        assert DEAN not in line
        assert new not in line
        counted = json.loads(broker.cli("lockout", "list", "--tenant", "chgacl", "--json").stdout)
        assert counted == [], "a refused change is no wrong password"
        assert broker.sign_in("dean@chgacl.example", DEAN).outcome == Outcome.SUCCESS
        assert broker.sign_in("dean@chgacl.example", new).outcome == Outcome.INVALID_CREDENTIALS

    @pytest.mark.usefixtures("locked_down_agent")
    def test_cli_exit_code(self, broker: BrokerProcess) -> None:
        """``pta-signin --change-password`` prints it and exits 30."""
        new = secret("Dean-newer-pw-43")
        done = signin_cli(broker, "dean@chgacl.example", f"{DEAN}\n{new}\n", "--change-password")
        assert done.returncode == 30, done.stdout + done.stderr
        assert done.stdout.startswith("CHANGE_REFUSED: the organisation's directory refused")
