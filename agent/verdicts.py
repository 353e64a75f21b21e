"""What a directory said about one check, as the agent answers it: the verdict and its mapping.

Shared by the sign-in path (:mod:`agent.directory`, binds on the event loop) and the password
change (:mod:`agent.password_change`, binds through ldap3 on a worker thread): one reading of
a bind's result, whichever way the bind went.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import outcomes, ppolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pta.v1 import outcome_pb2


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the directory said about one sign-in; ``message`` is safe to show the user."""

    outcome: outcome_pb2.Outcome
    message: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One credential check of a batch: a sign-in, or a password change when ``new_password``."""

    username: str
    password: str = field(repr=False)
    new_password: str = field(default="", repr=False)


def bind_verdict(result: Mapping[str, Any]) -> Verdict:
    """What a bind's result means for the user.

    The password policy control decides first: OpenLDAP says "expired", "locked" or "must
    change" only in the response control (must-change even on a successful bind); AD ignores
    the control (it is not critical) and answers with its data subcodes instead.
    """
    code = result.get("result", -1)
    policy = ppolicy.parse_response(result.get("controls"))
    decided = ppolicy.outcome(code, policy)
    if decided is None:
        decided = outcomes.from_bind(code, result.get("message", ""))
    return Verdict(decided, ppolicy.warning_message(policy))
