"""Account keys: ``broker/policy/accounts.py`` on a real store, and the policy keyed by them.

The folding itself is checked against a real slapd in ``tests/test_folding.py``; here, what the
key is made of, how agents' hellos become one rule per domain, and that everything the policy
keeps per user (counters, refused passwords, the directory guard, MFA) follows the account.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest
from structlog.testing import capture_logs

from agent.config import AgentConfig, DirectoryConfig
from broker.policy import mfa
from broker.policy.accounts import (
    AccountMap,
    AccountRule,
    account_key,
    fold,
    hello_rules,
    resolve,
    typed_key,
)
from broker.policy.recent_failures import RecentFailures
from broker.policy.signin_policy import Attempt, SignInPolicy, Verdict
from broker.policy.signing import TokenSigner
from broker.policy.tenant_policy import TenantPolicy
from broker.store import open_store
from broker.store.records import DirectoryPolicyRecord
from pta.errors import InvalidRequest
from pta.names import parse_upn
from pta.v1 import agent_pb2, outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator

    from broker.store.protocols import Store
    from tests.broker.policy.helpers import FakeClock

Outcome = outcome_pb2.Outcome
Scope = agent_pb2.LoginScope
TENANT = "acme"
DOMAINS = ("example.com", "example.org", "mail.example")
PEOPLE = AccountRule("ou=people,dc=example,dc=com", "local")
ADDRESS = "203.0.113.7"


def _dir(
    *domains: str,
    ident: str = PEOPLE.directory,
    scope: agent_pb2.LoginScope = Scope.LOGIN_SCOPE_LOCAL_PART,
) -> agent_pb2.DirectoryAccounts:
    """One directory of a hello."""
    return agent_pb2.DirectoryAccounts(domains=list(domains), directory_id=ident, login_scope=scope)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real store: tenant acme owning three domains, with two enrolled agents."""
    store = open_store(tmp_path)
    store.add_tenant(TENANT, list(DOMAINS))
    for agent_id in ("agt-a", "agt-b"):
        store.agents.add(
            agent_id=agent_id,
            tenant=TENANT,
            hostname="h",
            version="v",
            serial=agent_id,
            envelope_public_key=b"k" * 32,
            not_after=time.time() + 3600,
        )
    yield store
    store.close()


class TestKey:
    """What a key is made of."""

    def test_local_part_scope_keys_on_the_directory(self) -> None:
        """Under a local-part rule every domain's spelling of alice is one account."""
        keys = {
            account_key(parse_upn(f"{n}@{d}"), PEOPLE)
            for n in ("alice", "ALİCE", " Alice")
            for d in DOMAINS
        }
        assert keys == {"alice@[ou=people,dc=example,dc=com]"}

    def test_full_name_scope_and_nothing_known_key_on_the_typed_name(self) -> None:
        """A full-name rule, or none (an old agent), keeps today's key: folded local @ domain."""
        upn = parse_upn("ALİCE@Example.ORG")
        full = AccountRule(PEOPLE.directory, "full")
        assert account_key(upn, full) == account_key(upn, None) == typed_key(upn)
        assert typed_key(upn) == "alice@example.org"

    def test_forms_never_collide(self) -> None:
        """A name holding ``@[`` cannot pass for an account key of another name."""
        tricky = parse_upn("alice@[ou=people,dc=example,dc=com]@example.com")
        assert typed_key(tricky) != account_key(parse_upn("alice@example.com"), PEOPLE)
        assert account_key(tricky, PEOPLE).rpartition("@[")[2] == PEOPLE.directory + "]"

    def test_fold_is_idempotent(self) -> None:
        """Folding a folded name changes nothing, for every code point (keys are stable)."""
        for cp in range(0x110000):
            if 0xD800 <= cp < 0xE000:
                continue
            once = fold(f"q{chr(cp)}z")
            assert fold(once) == once, hex(cp)


class TestHelloRules:
    """An agent's hello mapped to its served domains, as the agent picks its directory."""

    def test_the_agent_config_and_the_broker_pick_the_same_directory(self) -> None:
        """Explicit domains first, then the first catch-all: as AgentConfig.directory_for."""
        config = AgentConfig(
            state_dir=Path("/nonexistent"),  # Never read: only the directories matter.
            directories=(
                DirectoryConfig(
                    urls=("ldap://a",),
                    base_dn="DC=Mail, DC=Example",
                    domains=("mail.example",),
                    login_attribute="mail",
                ),
                DirectoryConfig(urls=("ldap://b",), base_dn="ou=People , dc=Example,dc=com"),
                DirectoryConfig(urls=("ldap://c",), base_dn="dc=never,dc=used"),
            ),
        )
        rules = hello_rules(config.hello_directories(), DOMAINS)
        assert rules == {
            "mail.example": AccountRule("dc=mail,dc=example", "full"),
            "example.com": PEOPLE,
            "example.org": PEOPLE,
        }
        for domain in DOMAINS:
            chosen = config.directory_for(domain)
            assert chosen is not None
            assert rules[domain].directory == chosen.directory_id

    def test_old_agents_and_bad_entries_say_nothing(self) -> None:
        """No directories (an older agent), no scope, or a bad identity: keyed as typed."""
        assert hello_rules([], DOMAINS) == {}
        assert hello_rules([_dir(scope=Scope.LOGIN_SCOPE_UNSPECIFIED)], DOMAINS) == {}
        assert hello_rules([_dir(ident="")], DOMAINS) == {}
        assert hello_rules([_dir(ident="o=a]b")], DOMAINS) == {}
        assert hello_rules([_dir(ident="x" * 513)], DOMAINS) == {}
        # A bad entry still takes its domain: the agent sends that domain there.
        assert hello_rules([_dir("example.com", ident=""), _dir()], DOMAINS) == {
            "example.org": PEOPLE,
            "mail.example": PEOPLE,
        }

    def test_too_many_directories_end_the_hello(self) -> None:
        """A hello describing more directories than it may name domains is refused."""
        with pytest.raises(InvalidRequest):
            hello_rules([_dir()] * 65, DOMAINS)

    def test_only_served_domains(self) -> None:
        """Domains the stream does not serve get no rule, whatever the hello names."""
        assert hello_rules([_dir("example.com", "evil.example")], {"example.org"}) == {}


class TestResolve:
    """Agents' words, one rule per domain; disagreement resolved toward merging more."""

    def test_agreement(self) -> None:
        """Two agents of one directory agree: one rule, no disagreement."""
        rules, disagreements = resolve({"a": {"example.com": PEOPLE}, "b": {"example.com": PEOPLE}})
        assert rules == {"example.com": PEOPLE}
        assert disagreements == []

    def test_local_part_wins_over_full_name(self) -> None:
        """A local-part scope merges more spellings: it is the safe pick, whichever agent."""
        full = AccountRule("dc=x", "full")
        for reports in ({"a": {"example.com": full}, "b": {"example.com": PEOPLE}},
                        {"a": {"example.com": PEOPLE}, "b": {"example.com": full}}):  # fmt: skip
            rules, (disagreement,) = resolve(reports)
            assert rules == {"example.com": PEOPLE}
            assert disagreement.domain == "example.com"

    def test_directories_named_for_one_domain_are_one(self) -> None:
        """Two directories named for one domain are merged, transitively and deterministically."""
        x, y = AccountRule("dc=x", "local"), AccountRule("dc=y", "local")
        rules, disagreements = resolve(
            {"b": {"example.com": y, "example.org": y}, "a": {"example.com": x}}
        )
        assert rules == {"example.com": x, "example.org": x}
        assert [d.domain for d in disagreements] == ["example.com", "example.org"]

    def test_agents_that_say_nothing_are_not_counted(self) -> None:
        """An old agent's silence does not undo a newer agent's word."""
        rules, disagreements = resolve({"old": {}, "new": {"example.com": PEOPLE}})
        assert rules == {"example.com": PEOPLE}
        assert disagreements == []


class TestAccountMap:
    """The rules as the store keeps them, shared by the broker and the CLI."""

    def test_recorded_rules_survive_a_restart(self, store: Store) -> None:
        """A new map (the CLI, or the broker restarted) keys users as the old one did."""
        AccountMap(store.policy).record(
            TENANT, "agt-a", {"example.com": PEOPLE, "example.org": PEOPLE}
        )
        again = AccountMap(store.policy)
        assert (
            again.key(TENANT, parse_upn("Alice@example.org"))
            == "alice@[ou=people,dc=example,dc=com]"
        )
        assert again.key(TENANT, parse_upn("alice@mail.example")) == "alice@mail.example"

    def test_an_agent_that_stops_saying_is_forgotten(self, store: Store) -> None:
        """An agent reconnecting without rules (downgraded) no longer keys its domains."""
        accounts = AccountMap(store.policy)
        accounts.record(TENANT, "agt-a", {"example.com": PEOPLE})
        accounts.record(TENANT, "agt-a", {})
        assert AccountMap(store.policy).rule(TENANT, "example.com") is None
        assert accounts.rule(TENANT, "example.com") is None

    def test_disagreement_is_logged_with_the_domain_and_agents(self, store: Store) -> None:
        """The warning names the domain, every agent's word and the rule chosen."""
        accounts = AccountMap(store.policy)
        accounts.record(TENANT, "agt-a", {"example.com": AccountRule("dc=x", "full")})
        with capture_logs() as logs:
            accounts.record(TENANT, "agt-b", {"example.com": PEOPLE})
        (warning,) = [e for e in logs if e["event"] == "accounts.agents_disagree"]
        assert warning["domain"] == "example.com"
        assert set(warning["agents"]) == {"agt-a", "agt-b"}
        assert "ou=people" in warning["chosen"]

    def test_keys_lists_the_account_then_typed_names(self, store: Store) -> None:
        """State kept under a typed name before the rule was known is found after it."""
        accounts = AccountMap(store.policy)
        accounts.record(TENANT, "agt-a", {"example.com": PEOPLE, "example.org": PEOPLE})
        assert accounts.keys(TENANT, "alice@example.org") == [
            "alice@[ou=people,dc=example,dc=com]",
            "alice@example.org",
            "alice@example.com",
        ]
        assert accounts.keys(TENANT, "alice@mail.example") == ["alice@mail.example"]


@pytest.fixture
def policy(store: Store, tmp_path: Path, mfa_key: mfa.MfaKey, clock: FakeClock) -> SignInPolicy:
    """The policy, with one agent having said example.com and example.org are one directory."""
    policy = SignInPolicy(
        store.policy,
        TokenSigner(tmp_path, issuer="t", audience="a", clock=clock),
        mfa_key=mfa_key,
        challenges=mfa.Challenges(clock=clock),
        recent=RecentFailures(clock=clock),
        clock=clock,
    )
    policy.accounts.record(TENANT, "agt-a", {"example.com": PEOPLE, "example.org": PEOPLE})
    policy.directory_reported(
        TENANT,
        [
            DirectoryPolicyRecord(TENANT, d, "agt-a", True, 5, "test", 0.0)  # noqa: FBT003
            for d in ("example.com", "example.org")
        ],
    )
    return policy


async def _begin(policy: SignInPolicy, name: str, password: str) -> Attempt | Verdict:
    deadline = asyncio.get_running_loop().time() + 5
    return await policy.begin(TENANT, parse_upn(name), password, ADDRESS, deadline=deadline)


class TestPolicyFollowsTheAccount:
    """Everything the policy keeps per user is kept per directory account."""

    async def test_the_guard_counts_both_domains_as_one_account(self, policy: SignInPolicy) -> None:
        """Wrong passwords alternated over domains and spellings share one directory count."""
        names = ["alice@example.com", "ALICE@example.org", "alİce@example.com"]
        for n, name in enumerate(names):
            attempt = await _begin(policy, name, f"Wrong-{n}")
            assert isinstance(attempt, Attempt)
            assert attempt.subject == typed_key(parse_upn(name))
            policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        refused = await _begin(policy, "Alice@example.org", "Wrong-3")
        assert isinstance(refused, Verdict)
        assert refused.decided_by == "directory_guard"
        users = {user for _, user, _ in policy.gate.counters}
        assert users == {"alice@[ou=people,dc=example,dc=com]"}

    async def test_a_refused_password_is_remembered_across_domains(
        self, policy: SignInPolicy
    ) -> None:
        """The same wrong password typed again under the other domain is not counted again."""
        attempt = await _begin(policy, "alice@example.com", "Same-wrong")
        assert isinstance(attempt, Attempt)
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        repeat = await _begin(policy, "alice@example.org", "Same-wrong")
        assert isinstance(repeat, Verdict)
        assert repeat.decided_by == "repeat"

    @pytest.mark.parametrize("enrolled_as", ["account", "typed-other-domain"])
    async def test_mfa_enrolled_via_one_domain_applies_to_the_other(
        self, store: Store, policy: SignInPolicy, mfa_key: mfa.MfaKey, enrolled_as: str
    ) -> None:
        """Under the account key (as the CLI enrols), or under a typed name from before."""
        key = {
            "account": "alice@[ou=people,dc=example,dc=com]",
            "typed-other-domain": "alice@example.com",
        }[enrolled_as]
        secret = mfa.new_secret()
        store.policy.enrol_mfa(TENANT, key, mfa_key.seal(secret, TENANT, key), time.time())
        store.policy.set_tenant_policy(TENANT, TenantPolicy().updated(mfa="always"))
        policy.reload()
        attempt = await _begin(policy, "Alice@example.org", "Right-pw-1!")
        assert isinstance(attempt, Attempt)
        policy.end(attempt, Outcome.SUCCESS)
        challenge = policy.grant(attempt, "req-1")
        assert challenge.outcome == Outcome.MFA_REQUIRED
        verdict, _ = policy.complete(challenge.challenge_id, mfa.code_at(secret, time.time()))
        assert verdict.outcome == Outcome.SUCCESS
        claims = jwt.decode(verdict.token, options={"verify_signature": False})
        assert claims["sub"] == "alice@example.org"  # The typed name, not the account key.
