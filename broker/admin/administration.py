"""The AdminService's methods over a store, by name: what the servicer and the CLI both call.

Each method takes its request message and returns its answer message; failures are
:class:`~pta.errors.PtaError` with a message an operator can act on (a bad value of theirs
is INVALID_ARGUMENT, whichever check found it). Calls are synchronous store work: the
servicer runs them off the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.admin import access, tenants, users
from broker.admin.context import AdminContext
from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from google.protobuf.message import Message

#: Every AdminService method, by its name in the contract.
METHODS: dict[str, Callable[[AdminContext, Any], Message]] = {
    "AddTenant": tenants.add,
    "ListTenants": tenants.listing,
    "ShowTenant": tenants.show,
    "SetTenantPolicy": tenants.set_policy,
    "ChangeBannedTerms": tenants.change_banned_terms,
    "CreateToken": access.create_token,
    "ListTokens": access.list_tokens,
    "DeleteToken": access.delete_token,
    "ListAgents": access.list_agents,
    "RevokeAgent": access.revoke_agent,
    "ListLockouts": users.list_lockouts,
    "ClearLockouts": users.clear_lockouts,
    "ListMfa": users.list_mfa,
    "EnrolMfa": users.enrol_mfa,
    "RemoveMfa": users.remove_mfa,
}


class Administration(AdminContext):
    """The methods by name, over the context's store."""

    __slots__ = ()

    def call(self, method: str, request: Message) -> Message:
        """Run ``method`` (a name in :data:`METHODS`) on ``request``.

        Raises:
            PtaError: What the method refused, with a message that says why.
            InvalidRequest: Also for a value the policy or a parser rejected (ValueError).
        """
        try:
            return METHODS[method](self, request)
        except ValueError as error:  # A duration, a CIDR, a term, a threshold of the operator's.
            raise InvalidRequest(str(error)) from None
