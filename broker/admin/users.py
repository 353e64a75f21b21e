"""A tenant's users as the broker keeps them: lockout counters and TOTP authenticators.

Users are named as they type their name (``user@domain``); the broker keys what it keeps on
the account as the tenant's directories identify it (:class:`~broker.policy.accounts.AccountMap`),
so each method looks under every key the account's state may be under.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.admin.tenants import guards, iso, known
from broker.policy import mfa
from broker.policy.accounts import AccountMap, typed_key
from pta.errors import AlreadyExists, FailedPrecondition, InvalidRequest, NotFound
from pta.names import parse_upn
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    from broker.admin.context import AdminContext
    from broker.store.protocols import Store

DEFAULT_MFA_ISSUER = "pta"


def user_keys(store: Store, tenant: str, text: str) -> list[str]:
    """The keys a user's state may be under: the account's first (see AccountMap.keys).

    Raises:
        InvalidRequest: The name is not user@domain, or the domain is not the tenant's.
    """
    upn = parse_upn(text)
    if store.tenant_for_domain(upn.domain) != tenant:
        raise InvalidRequest(f"{upn.domain} is not a domain of tenant {tenant}")
    return AccountMap(store.policy).keys(tenant, typed_key(upn))


def list_lockouts(
    admin: AdminContext, request: admin_pb2.ListLockoutsRequest
) -> admin_pb2.ListLockoutsResponse:
    """Every user with failures counted, in the cloud and sent to the directory."""
    store, tenant = admin.store, request.tenant
    known(store, tenant)
    now = time.time()
    guarded = guards(store, tenant, now)
    found = []
    for (owner, user, location), c in sorted(store.policy.counters().items()):
        if owner != tenant:
            continue
        row = admin_pb2.Lockout(
            user=user,
            location=location,
            failures=c.failures,
            lockouts=c.lockouts,
            locked_for_seconds=max(0, round(c.locked_until - now)),
            last_failure=iso(c.last_failure),
        )
        if location == "directory" and user in guarded:
            row.guard.CopyFrom(guarded[user])
        found.append(row)
    return admin_pb2.ListLockoutsResponse(lockouts=found)


def clear_lockouts(
    admin: AdminContext, request: admin_pb2.ClearLockoutsRequest
) -> admin_pb2.ClearLockoutsResponse:
    """Unlock one user (every key the account is under) or all of a tenant's.

    Raises:
        InvalidRequest: Neither or both of a user and all.
    """
    store, tenant = admin.store, request.tenant
    known(store, tenant)
    if bool(request.user) == request.all:
        raise InvalidRequest("name one user, or all")
    if request.all:
        cleared = store.policy.clear_counters(tenant)
    else:
        keys = user_keys(store, tenant, request.user)
        cleared = sum(store.policy.clear_counters(tenant, key) for key in keys)
    return admin_pb2.ClearLockoutsResponse(cleared=cleared)


def list_mfa(admin: AdminContext, request: admin_pb2.ListMfaRequest) -> admin_pb2.ListMfaResponse:
    """The users of a tenant with an authenticator, and since when."""
    known(admin.store, request.tenant)
    return admin_pb2.ListMfaResponse(
        users=[
            admin_pb2.MfaUser(user=user, enrolled_at=iso(at))
            for user, at in admin.store.policy.mfa_users(request.tenant)
        ]
    )


def enrol_mfa(
    admin: AdminContext, request: admin_pb2.EnrolMfaRequest
) -> admin_pb2.EnrolMfaResponse:
    """A new TOTP authenticator for the user, sealed with the MFA key; its URI, shown once.

    Raises:
        AlreadyExists: The user has one and the request does not say replace.
        FailedPrecondition: There is no MFA key to seal it with.
    """
    store, tenant = admin.store, request.tenant
    known(store, tenant)
    keys = user_keys(store, tenant, request.user)
    user = keys[0]
    if not request.replace and any(store.policy.mfa(tenant, k) for k in keys):
        raise AlreadyExists(
            f"{user} already has an authenticator: --replace (the request's replace) enrols a"
            " new one (the old one stops working at once)"
        )
    key = admin.mfa_key()
    if key is None:
        raise FailedPrecondition(admin.no_mfa_key)
    secret = mfa.new_secret()
    store.policy.enrol_mfa(tenant, user, key.seal(secret, tenant, user), time.time())
    for older in keys[1:]:  # One enrolled under a typed name before would be found second.
        store.policy.remove_mfa(tenant, older)
    uri = mfa.provisioning_uri(
        secret, typed_key(parse_upn(request.user)), request.issuer or DEFAULT_MFA_ISSUER
    )
    del secret
    return admin_pb2.EnrolMfaResponse(user=user, uri=uri)


def remove_mfa(
    admin: AdminContext, request: admin_pb2.RemoveMfaRequest
) -> admin_pb2.RemoveMfaResponse:
    """Remove the user's authenticator, under every key it may be under.

    Raises:
        NotFound: The user has none.
    """
    store, tenant = admin.store, request.tenant
    known(store, tenant)
    keys = user_keys(store, tenant, request.user)
    if not sum(store.policy.remove_mfa(tenant, key) for key in keys):
        raise NotFound(f"{keys[0]} has no authenticator")
    return admin_pb2.RemoveMfaResponse(user=keys[0])
