"""Which directory account a typed name is: the key the sign-in policy keeps per user.

Lockout counters, the memory of refused passwords, the count of wrong passwords the directory
has seen (the directory guard), familiar networks and MFA enrolment are all kept per *account
as the directory identifies it*, because that is what the directory counts and locks. A
directory whose login attribute takes only the part before ``@`` (``uid``, the agent's default)
has one account ``alice`` behind ``alice@example.com`` and ``alice@example.org``; keyed on the
typed name, wrong passwords spread over the two domains all reached the directory and locked
the account on premises.

Each agent says in its hello, per directory, which domains it serves, the directory's identity
and whether it searches the whole name or the part before ``@`` (``DirectoryAccounts`` in
``proto/pta/v1/agent.proto``). The broker records each agent's word per domain in the store
(so that the CLI, another process, computes the same keys) and resolves the agents' words
into one rule per domain (:func:`resolve`). The key is then:

* local-part scope: ``<folded local part>@[<directory>]``: one account in every domain of
  the directory;
* full-name scope, or nothing known (an older agent, no agent yet): ``<folded local
  part>@<domain>``, the typed name as the broker has always keyed it.

The two forms cannot collide: a domain is a DNS name, so it never starts with ``[``, and a
directory identity holds no ``[`` or ``]``, so the last ``@[`` of a key is its separator.
The token's subject stays the typed name (:func:`typed_key`); only the policy's state moves.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

from pta.errors import InvalidRequest
from pta.names import normalize_domain
from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from broker.store.policy_store import PolicyStore
    from pta.names import Upn

log = structlog.get_logger()

Scope = Literal["full", "local"]
_SCOPES: dict[int, Scope] = {
    agent_pb2.LoginScope.LOGIN_SCOPE_FULL_NAME: "full",
    agent_pb2.LoginScope.LOGIN_SCOPE_LOCAL_PART: "local",
}
#: Directories one hello may describe (as many as the domains it may name).
MAX_DIRECTORIES = 64
MAX_DIRECTORY_ID = 512
_BAD_ID = re.compile(r"[\x00-\x1f\x7f-\x9f\[\]]")

#: Characters removed before anything else. Slapd does *not* ignore these (measured: with
#: them a name finds nobody), but RFC 4518 says a directory may; counting such a spelling
#: with the plain name costs nobody anything (it is an unknown user in slapd), while a
#: directory that ignores them would otherwise give each spelling a fresh count.
_IGNORED: dict[int, str | None] = dict.fromkeys(
    [0x00AD, 0x034F, 0x180B, 0x180C, 0x180D, 0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]
)
_IGNORED.update(dict.fromkeys(range(0xFE00, 0xFE10)))
#: Slapd lowercases U+0130 (capital I with dot above) to a plain ``i`` (its simple lowercase
#: mapping), so ``ALİCE`` finds alice; ``casefold()`` would make it ``i`` + U+0307 instead.
_IGNORED[0x0130] = "i"
_SPACES = re.compile(r"\s+")


def fold(name: str) -> str:
    """Fold a login name so that every spelling the directory matches as one is one string.

    Measured against slapd's ``caseIgnoreMatch`` (``uid``; see ``tests/test_folding.py``,
    which checks every code point and a table of spellings): slapd ignores case (``İ``, the
    Kelvin sign and other letter-likes included), compatibility forms (fullwidth letters,
    mathematical alphanumerics, superscripts: NFKC), leading and trailing spaces, and runs of
    inner spaces. This fold does all of that, and merges a little more than slapd, which is the
    safe side (one more spelling sharing a count never gives an attacker a fresh one): ``ß``
    and ``ss``, final and medial sigma, every Unicode space, the invisible characters above.
    """
    text = unicodedata.normalize("NFKC", name.translate(_IGNORED))
    folded = _SPACES.sub(" ", text).strip().casefold()
    # Full case folding may decompose (U+0390 becomes iota, diaeresis, acute) where the
    # typed decomposed form composes first: normalise again so both are one string.
    return unicodedata.normalize("NFKC", folded)


def typed_key(upn: Upn) -> str:
    """The typed name, folded: the token's subject, and the key when nothing else is known."""
    return f"{fold(upn.local)}@{upn.domain}"


@dataclass(frozen=True, slots=True, order=True)
class AccountRule:
    """How one domain's names map to accounts: which directory, and what part it searches."""

    #: The directory's identity, as its agents report it (its normalised base DN).
    directory: str
    scope: Scope


def account_key(upn: Upn, rule: AccountRule | None) -> str:
    """The key of the account ``upn`` signs in to, under ``rule`` (None: nothing known)."""
    if rule is None or rule.scope == "full":
        return typed_key(upn)
    return f"{fold(upn.local)}@[{rule.directory}]"


def hello_rules(
    directories: Sequence[agent_pb2.DirectoryAccounts], served: Iterable[str]
) -> dict[str, AccountRule]:
    """The rule an agent's hello gives each domain its stream serves.

    Mirrors the agent's choice of directory (``AgentConfig.directory_for``): the first
    directory naming the domain, else the first naming none. A domain whose directory says
    nothing usable (no scope, a malformed identity) gets no rule: it is keyed as typed.
    """
    if len(directories) > MAX_DIRECTORIES:
        raise InvalidRequest("too many directories in hello")
    entries: list[tuple[frozenset[str], AccountRule | None]] = []
    for entry in directories:
        domains = set()
        for domain in entry.domains:
            try:
                domains.add(normalize_domain(domain))
            except InvalidRequest:
                continue
        scope = _SCOPES.get(entry.login_scope)
        ident = entry.directory_id
        valid = 0 < len(ident) <= MAX_DIRECTORY_ID and not _BAD_ID.search(ident)
        rule = AccountRule(ident, scope) if scope is not None and valid else None
        entries.append((frozenset(domains), rule))
    rules: dict[str, AccountRule] = {}
    for domain in served:
        chosen = next((e for e in entries if domain in e[0]), None)
        chosen = chosen or next((e for e in entries if not e[0]), None)
        if chosen is not None and chosen[1] is not None:
            rules[domain] = chosen[1]
    return rules


@dataclass(frozen=True, slots=True)
class Disagreement:
    """Agents of one tenant that describe a domain differently, and the rule chosen."""

    domain: str
    said: dict[str, AccountRule]
    chosen: AccountRule


def resolve(
    reports: Mapping[str, Mapping[str, AccountRule]],
) -> tuple[dict[str, AccountRule], list[Disagreement]]:
    """One rule per domain from every agent's word (agent id -> domain -> rule).

    Agents that say nothing of a domain are not counted. When agents disagree, the choice is
    the one that merges more names into one account, the safe side: a local-part scope over
    the full name, and directories named for one domain by different agents are taken as one
    (transitively, keyed by the smallest identity), so that no spelling the directory matches
    as one account is ever counted apart.

    Returns:
        The rule of each domain something is known of, and the domains agents disagree on.
    """
    said: dict[str, dict[str, AccountRule]] = {}
    for agent_id, rules in sorted(reports.items()):
        for domain, rule in rules.items():
            said.setdefault(domain, {})[agent_id] = rule
    parent: dict[str, str] = {}

    def root(directory: str) -> str:
        while (up := parent.get(directory, directory)) != directory:
            directory = up
        return directory

    for rules in said.values():
        named = sorted({r.directory for r in rules.values() if r.scope == "local"})
        for other in named[1:]:
            low, high = sorted((root(named[0]), root(other)))
            if low != high:
                parent[high] = low
    chosen: dict[str, AccountRule] = {}
    disagreements = []
    for domain, rules in sorted(said.items()):
        merged = [r for r in rules.values() if r.scope == "local"]
        rule = AccountRule(root(merged[0].directory), "local") if merged else min(rules.values())
        chosen[domain] = rule
        if len(set(rules.values())) > 1 or rule not in rules.values():
            disagreements.append(Disagreement(domain, dict(rules), rule))
    return chosen, disagreements


class AccountMap:
    """Every tenant's rules, as recorded in the store; the broker and the CLI share one table."""

    def __init__(self, store: PolicyStore) -> None:
        """Load what agents said before (a restart must not split anyone's counts)."""
        self._store = store
        self._reports: dict[str, dict[str, dict[str, AccountRule]]] = {}
        for tenant, agent_id, domain, directory, scope in store.account_rules():
            rule = AccountRule(directory, "local" if scope == "local" else "full")
            self._reports.setdefault(tenant, {}).setdefault(agent_id, {})[domain] = rule
        self._rules = {tenant: resolve(reports)[0] for tenant, reports in self._reports.items()}

    def rule(self, tenant: str, domain: str) -> AccountRule | None:
        """The rule of a tenant's domain; None when no agent has said."""
        return self._rules.get(tenant, {}).get(domain)

    def key(self, tenant: str, upn: Upn) -> str:
        """The account key of a typed name (see the module docstring)."""
        return account_key(upn, self.rule(tenant, upn.domain))

    def keys(self, tenant: str, typed: str) -> list[str]:
        """Every key state of the account behind a typed key may be kept under, best first.

        The account key, then the typed key itself, then the typed keys of the account in the
        directory's other domains: what was enrolled (MFA) or counted before the agents said
        how the directory names accounts was kept under the name as typed then.
        """
        local, _, domain = typed.rpartition("@")
        rule = self.rule(tenant, domain)
        if rule is None or rule.scope == "full":
            return [typed]
        others = sorted(d for d, r in self._rules[tenant].items() if r == rule and d != domain)
        return [f"{local}@[{rule.directory}]", typed, *(f"{local}@{d}" for d in others)]

    def domains(self, tenant: str, key: str) -> list[str]:
        """The domains whose names a key's account is reached by (its own for a typed key)."""
        _, _, where = key.rpartition("@")
        if not where.startswith("["):
            return [where]
        directory = where[1:-1]
        rules = self._rules.get(tenant, {})
        return sorted(
            d for d, r in rules.items() if r.scope == "local" and r.directory == directory
        )

    def record(self, tenant: str, agent_id: str, rules: Mapping[str, AccountRule]) -> None:
        """Take an agent's word from its hello; keep it in the store; warn on disagreement.

        Called before the stream is attached, so no sign-in reaches the agent's directory
        before the broker counts for it as it should.
        """
        reports = self._reports.setdefault(tenant, {})
        if reports.get(agent_id, {}) == rules:
            return
        if rules:
            reports[agent_id] = dict(rules)
        else:
            reports.pop(agent_id, None)
        self._store.replace_account_rules(
            tenant, agent_id, [(d, r.directory, r.scope) for d, r in sorted(rules.items())]
        )
        before = self._rules.get(tenant, {})
        self._rules[tenant], disagreements = resolve(reports)
        for domain in sorted(set(before) | set(self._rules[tenant])):
            if before.get(domain) != self._rules[tenant].get(domain):
                log.info(
                    "accounts.rule_changed",
                    tenant=tenant,
                    domain=domain,
                    agent_id=agent_id,
                    rule=_describe(self._rules[tenant].get(domain)),
                    was=_describe(before.get(domain)),
                )
        for disagreement in disagreements:
            if agent_id in disagreement.said:
                log.warning(
                    "accounts.agents_disagree",
                    tenant=tenant,
                    domain=disagreement.domain,
                    agents={a: _describe(r) for a, r in sorted(disagreement.said.items())},
                    chosen=_describe(disagreement.chosen),
                )


def _describe(rule: AccountRule | None) -> str:
    if rule is None:
        return "typed name"
    if rule.scope == "full":
        return f"full name in {rule.directory}"
    return f"part before @ in {rule.directory}"
