"""The policy tests' fixtures (defined in :mod:`tests.broker.policy.helpers`)."""

from tests.broker.policy.helpers import (  # noqa: F401 - fixtures, found by name
    challenges,
    clock,
    ledger,
    mfa_key,
    phone,
    policy,
    signer,
    store,
)
