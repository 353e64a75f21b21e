"""Tenants: add, list, show, their sign-in policy, their own banned password terms.

Changes go to the store every serving broker reads; each applies them within a second.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from broker.policy import lockout
from broker.policy.accounts import AccountMap
from broker.policy.banned_passwords import check_term
from broker.policy.password_protection import MAX_TENANT_TERMS
from broker.policy.signin_policy import threshold_warning
from broker.store.records import STATUS_FRESHNESS
from pta.config import parse_duration
from pta.errors import NotFound
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    from broker.admin.context import AdminContext
    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.protocols import Store


def iso(stamp: float) -> str:
    """A time as operators read it: ISO 8601, UTC, to the second."""
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


def known(store: Store, tenant: str) -> None:
    """Raise :class:`NotFound` unless ``tenant`` exists (one sentence for every method)."""
    if tenant not in store.tenants():
        raise NotFound(f"no tenant {tenant!r}")


def add(admin: AdminContext, request: admin_pb2.AddTenantRequest) -> admin_pb2.Tenant:
    """Create a tenant owning its domains, all or nothing."""
    admin.store.add_tenant(request.name, list(request.domains))
    return admin_pb2.Tenant(name=request.name, domains=admin.store.tenants()[request.name])


def listing(
    admin: AdminContext, request: admin_pb2.ListTenantsRequest
) -> admin_pb2.ListTenantsResponse:
    """Every tenant and its domains."""
    del request
    return admin_pb2.ListTenantsResponse(
        tenants=[
            admin_pb2.Tenant(name=name, domains=domains)
            for name, domains in admin.store.tenants().items()
        ]
    )


def policy_message(policy: TenantPolicy) -> admin_pb2.TenantPolicy:
    """A tenant policy in the contract's shape (the settings as ``tenant show`` reads them)."""
    return admin_pb2.TenantPolicy(
        lockout_threshold=policy.lockout.threshold,
        lockout_duration=policy.lockout.duration,
        lockout_max_duration=policy.lockout.max_duration,
        familiar_networks=policy.familiar_networks,
        familiar_window=policy.familiar_window,
        mfa=policy.mfa,
    )


def set_policy(
    admin: AdminContext, request: admin_pb2.SetTenantPolicyRequest
) -> admin_pb2.SetTenantPolicyResponse:
    """Change the settings the request sets; warn when brokers cannot do what it now asks."""
    store = admin.store
    known(store, request.name)
    current = store.policy.tenant_policy(request.name)
    changes: dict[str, Any] = {}
    if request.HasField("lockout_threshold"):
        changes["lockout_threshold"] = request.lockout_threshold
    if request.HasField("lockout_duration"):
        changes["lockout_duration"] = parse_duration(request.lockout_duration)
    if request.HasField("lockout_max"):
        changes["lockout_max_duration"] = parse_duration(request.lockout_max)
    if request.no_familiar_networks or request.familiar_networks:
        kept = () if request.no_familiar_networks else current.familiar_networks
        changes["familiar_networks"] = (*kept, *request.familiar_networks)
    if request.HasField("familiar_window"):
        changes["familiar_window"] = parse_duration(request.familiar_window)
    if request.HasField("mfa"):
        changes["mfa"] = request.mfa
    policy = current.updated(**changes)
    store.policy.set_tenant_policy(request.name, policy)
    warnings = []
    serving = store.status(fresh_within=STATUS_FRESHNESS)
    keyless = sorted(b for b, said in serving.items() if said.get("mfa_key") == "no")
    if policy.mfa != "never" and keyless:
        warnings.append(
            f"{_brokers(keyless, len(serving))} no MFA key: sign-ins that need a second factor"
            " are answered UNAVAILABLE there until restarted with --mfa-key-file (make one"
            " with `pta-broker mfa keygen FILE`)"
        )
    return admin_pb2.SetTenantPolicyResponse(policy=policy_message(policy), warnings=warnings)


def _brokers(ids: list[str], serving: int) -> str:
    """Who a warning is about: the one broker, or which of the several brokers."""
    if serving == 1:
        return "the broker serving this store has"
    return f"{len(ids)} of the {serving} brokers serving this store ({', '.join(ids)}) have"


def guards(store: Store, tenant: str, now: float) -> dict[str, admin_pb2.DirectoryGuard]:
    """Per account with wrong passwords in the directory's count: what the guard does now.

    The same arithmetic as the serving broker's (:func:`broker.policy.lockout.directory_budget`):
    it refuses once the count reaches the bound, from unfamiliar places one sooner, until the
    count is forgotten (a success through pta, ``lockout clear``, or a quiet day).
    """
    rule = store.policy.tenant_policy(tenant).lockout
    said: dict[str, list[int]] = {}
    for report in store.directory_policies(tenant):
        if report.known:
            said.setdefault(report.domain, []).append(report.lockout_threshold)
    accounts = AccountMap(store.policy)
    found: dict[str, admin_pb2.DirectoryGuard] = {}
    for (owner, user, kind), counter in store.policy.counters().items():
        if owner != tenant or kind != "directory" or not rule.enabled:
            continue
        sent = lockout.current(counter, rule, now)
        domains = accounts.domains(tenant, user)
        threshold = lockout.lowest_threshold(t for d in domains for t in said.get(d, []))
        refuses = [
            where
            for where, unfamiliar in (("everywhere", False), ("from unfamiliar places", True))
            if (budget := lockout.directory_budget(threshold, unfamiliar=unfamiliar)) is not None
            and sent.failures >= budget
        ]
        found[user] = admin_pb2.DirectoryGuard(
            sent_to_directory=sent.failures,
            directory_locks_at=threshold,
            refuses=refuses[0] if refuses else "",
            until=iso(sent.last_failure + rule.forget_after) if refuses else "",
        )
    return found


def show(admin: AdminContext, request: admin_pb2.ShowTenantRequest) -> admin_pb2.TenantDetails:
    """A tenant's domains, policy, directories' reports, and who is locked or held back."""
    store, tenant = admin.store, request.name
    known(store, tenant)
    policy = store.policy.tenant_policy(tenant)
    now = time.time()
    counters = [(k, c) for k, c in store.policy.counters().items() if k[0] == tenant]
    return admin_pb2.TenantDetails(
        tenant=tenant,
        domains=store.tenants()[tenant],
        policy=policy_message(policy),
        directories=[
            admin_pb2.TenantDirectory(
                domain=d.domain,
                agent_id=d.agent_id,
                known=d.known,
                lockout_threshold=d.lockout_threshold,
                source=d.source,
                reported_at=iso(d.reported_at),
                warning=(
                    threshold_warning(policy.lockout.threshold, d.lockout_threshold)
                    if d.known
                    else ""
                ),
            )
            for d in store.directory_policies(tenant)
        ],
        locked_users=sorted({k[1] for k, c in counters if c.locked_until > now}),
        # Held back by the directory guard: one more would lock them in the directory.
        guarded_users={
            user: admin_pb2.Guard(refuses=g.refuses, until=g.until)
            for user, g in sorted(guards(store, tenant, now).items())
            if g.refuses
        },
        users_with_failures=len({k[1] for k, _ in counters}),
        mfa_users=len(store.policy.mfa_users(tenant)),
        banned_terms=len(store.policy.banned_terms(tenant)),
    )


def change_banned_terms(
    admin: AdminContext, request: admin_pb2.ChangeBannedTermsRequest
) -> admin_pb2.ChangeBannedTermsResponse:
    """Add and remove a tenant's own banned terms, all or nothing; the list as it is then.

    Raises:
        NotFound: When there is no such tenant.
        ValueError: When a term is not one the list can hold (one line saying why).
        InvalidRequest: When the list would be too long (nothing changes).
    """
    store = admin.store
    known(store, request.tenant)
    added = removed = 0
    if request.add or request.remove:
        add = [(term, check_term(term)) for term in request.add]
        remove = [check_term(term) for term in request.remove]
        added, removed, _ = store.policy.change_banned_terms(
            request.tenant, add=add, remove=remove, limit=MAX_TENANT_TERMS
        )
    return admin_pb2.ChangeBannedTermsResponse(
        added=added,
        removed=removed,
        terms=[
            admin_pb2.BannedTerm(term=term, normalised=normalised)
            for term, normalised in store.policy.banned_terms(request.tenant)
        ],
    )
