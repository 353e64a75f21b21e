"""What administration works on: a store, and what some methods need besides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.policy.mfa import MfaKey
    from broker.store.protocols import Store


@dataclass(frozen=True, slots=True)
class AdminContext:
    """A store to administer, and what some methods need besides it.

    The broker and the CLI differ only here: where the CA's fingerprint comes from (enrolment
    tokens pin it), which MFA key seals new authenticators, and what to say when there is none.
    """

    store: Store
    #: The CA agents must find; None: no broker has served this store yet.
    ca_fingerprint: Callable[[], str | None]
    mfa_key: Callable[[], MfaKey | None]
    #: Why there is no MFA key, and how to give one (differs between the CLI and a broker).
    no_mfa_key: str
