"""What the client may see of an agent's answer: ``broker/api/signin.py`` mapping, pure."""

from __future__ import annotations

import pytest

from broker.dispatch.jobs import Answer
from broker.signin_flow import visible as shown_to_client
from pta.errors import DirectoryUnavailable, Unavailable
from pta.v1 import outcome_pb2

Outcome = outcome_pb2.Outcome


class TestVisible:
    """Unknown users look like wrong passwords; non-answers become statuses."""

    @pytest.mark.parametrize(
        ("outcome", "visible"),
        [
            (Outcome.SUCCESS, Outcome.SUCCESS),
            (Outcome.UNKNOWN_USER, Outcome.INVALID_CREDENTIALS),
            (Outcome.INVALID_CREDENTIALS, Outcome.INVALID_CREDENTIALS),
            (Outcome.PASSWORD_EXPIRED, Outcome.PASSWORD_EXPIRED),
            (Outcome.ACCOUNT_LOCKED, Outcome.ACCOUNT_LOCKED),
            (Outcome.PASSWORD_REJECTED, Outcome.PASSWORD_REJECTED),
        ],
        ids=["success", "unknown-user", "wrong", "expired", "locked", "rejected"],
    )
    def test_outcomes(self, outcome: int, visible: int) -> None:
        """Each outcome maps to what the client sees."""
        assert shown_to_client(Answer(outcome=outcome, message="", agent_id="a"))[0] == visible

    def test_detail_never_added_to_a_wrong_password(self) -> None:
        """An agent's message is shown, except on wrong passwords (it could leak existence)."""
        shown = shown_to_client(
            Answer(outcome=Outcome.SUCCESS, message="expires in 3 days", agent_id="a")
        )
        assert shown[1] == "signed in (expires in 3 days)"
        hidden = shown_to_client(
            Answer(outcome=Outcome.UNKNOWN_USER, message="no such", agent_id="a")
        )
        assert hidden[1] == "wrong username or password"

    @pytest.mark.parametrize(
        ("outcome", "error"),
        [
            (Outcome.DIRECTORY_UNAVAILABLE, DirectoryUnavailable),
            (Outcome.REQUEST_REJECTED, Unavailable),
            (Outcome.OUTCOME_UNSPECIFIED, Unavailable),
            (999, Unavailable),
        ],
        ids=["directory-down", "rejected-envelope", "unspecified", "unknown-enum-value"],
    )
    def test_non_answers_are_unavailable(self, outcome: int, error: type[Exception]) -> None:
        """No definite answer about the user: a status, never a made-up outcome."""
        with pytest.raises(error):
            shown_to_client(Answer(outcome=outcome, message="", agent_id="a"))
