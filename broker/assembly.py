"""What a broker is built from its configuration and store: the sign-in policy, the CA's claim.

Alone (SQLite) the policy keeps what brokers would otherwise decide together in memory; on a
shared store (PostgreSQL) the challenges, the lockout's decisions, the memory of refused
passwords and the token-signing keys live in the store, sealed or hashed under keys only
holders of the cluster's CA can derive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker import ownership
from broker.policy.lockout_ledger import SHARED_THREADS, SharedLedger
from broker.policy.mfa import Challenges, MfaKey
from broker.policy.shared_challenges import SharedChallenges
from broker.policy.shared_repeats import SharedRecentFailures
from broker.policy.signin_policy import SignInPolicy
from broker.policy.signing import TokenSigner
from broker.policy.signing_keys import StoreKeyring
from broker.trust.ca import CA_CERT_FILE, CA_KEY_FILE

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.store.protocols import Store
    from broker.trust.ca import CertificateAuthority

#: What the key sealing a cluster's token-signing keys in the store is derived for.
SIGNING_KEY_PURPOSE = "token-signing-keys"
#: What the key of the refused passwords' digests in a shared store is derived for.
REFUSED_PASSWORDS_PURPOSE = "refused-passwords"


def sign_in_policy(config: BrokerConfig, store: Store, ca: CertificateAuthority) -> SignInPolicy:
    """The sign-in policy over ``store``, with what agents reported before a restart."""
    signer = TokenSigner(
        (
            StoreKeyring(store, ca.derived_key(SIGNING_KEY_PURPOSE))
            if store.shared
            else config.data_dir
        ),
        issuer=config.token_issuer,
        audience=config.token_audience,
        token_ttl=config.token_ttl,
        key_lifetime=config.signing_key_lifetime,
    )
    policy = SignInPolicy(
        store.policy,
        signer,
        mfa_key=MfaKey.load(config.mfa_key_file, config.mfa_key),
        challenges=(
            SharedChallenges(store.policy, ttl=config.mfa_challenge_ttl)
            if store.shared
            else Challenges(ttl=config.mfa_challenge_ttl)
        ),
        ledger=SharedLedger(store.policy, threads=SHARED_THREADS) if store.shared else None,
        recent=(
            SharedRecentFailures(store.policy, ca.derived_key(REFUSED_PASSWORDS_PURPOSE))
            if store.shared
            else None
        ),
    )
    for tenant in store.tenants():  # What agents said before a restart still holds.
        policy.directory_reported(tenant, store.directory_policies(tenant))
    return policy


def claim_ca(store: Store, ca: CertificateAuthority, config: BrokerConfig) -> None:
    """Join the store's cluster with this broker's CA, or refuse to start with another one.

    The first broker to serve a store claims it for its CA; the others must hold the same CA
    (its certificate and key), or agents and clients would trust some brokers and not others.

    Raises:
        CannotStart: The cluster's CA is another one; says which files to copy from where.
    """
    claimed = store.claim_ca(ca.fingerprint)
    if claimed != ca.fingerprint:
        raise ownership.CannotStart(
            f"the store {config.store_shown} belongs to a cluster whose CA is"
            f" sha256:{claimed[:16]}…, and this broker's CA in {config.data_dir} is"
            f" sha256:{ca.fingerprint[:16]}…: every broker of a cluster holds the same CA."
            f" Copy {CA_CERT_FILE} and {CA_KEY_FILE} from the first broker's data dir into"
            f" {config.data_dir} (replacing these), then start this broker again"
        )
