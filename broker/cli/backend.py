"""Where a management command runs: on a store opened here, or at a broker's AdminService.

Both run the same methods with the same messages (:mod:`broker.admin`), so a command prints
the same either way. Local: ``--data-dir`` (SQLite) or ``--store URL`` (a cluster's
PostgreSQL); remote: ``--broker HOST:PORT --admin-cert DIR``, the broker's agent endpoint,
with an administrator's certificate made by ``pta-broker admin issue``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from broker.admin import Administration
from broker.api.admin_client import Remote
from broker.config import mfa_key_file, store_url
from broker.policy import mfa
from broker.store import open_store
from broker.trust.ca import CertificateAuthority

if TYPE_CHECKING:
    import argparse

    from google.protobuf.message import Message

    from broker.store.protocols import Store

_Answer = TypeVar("_Answer")
#: The store a command runs on here; said when none is named (exit 2).
A_STORE = "--store URL (or PTA_STORE), or --data-dir (or PTA_BROKER_DATA_DIR)"
#: Said when no store and no broker is named (exit 2).
WHERE = f"{A_STORE}, or --broker HOST:PORT with --admin-cert DIR, is required"


class Backend(Protocol):
    """Runs AdminService methods by name."""

    def call(self, method: str, request: Message) -> Message:
        """The answer to ``request``; a refusal raises :class:`~pta.errors.PtaError`."""

    def close(self) -> None:
        """Release what it holds."""


class Usage(Exception):
    """The command line names no place to work on, or a wrong one: exit 2 with the message."""


class Local:
    """Methods run here on a store this process opened."""

    def __init__(self, store: Store, data: Path | None, args: argparse.Namespace) -> None:
        """Administer ``store``; the CA (for tokens) is the data dir's or the cluster's."""
        self.store = store

        def fingerprint() -> str | None:
            if data is not None:
                return CertificateAuthority.load_or_create(data).fingerprint
            return store.cluster_ca()

        def key() -> mfa.MfaKey | None:
            return mfa.MfaKey.load(
                mfa_key_file(vars(args), os.environ), os.environ.get("PTA_BROKER_MFA_KEY", "")
            )

        self._admin = Administration(
            store=store,
            ca_fingerprint=fingerprint,
            mfa_key=key,
            no_mfa_key=(
                "no MFA key: --mfa-key-file (or PTA_BROKER_MFA_KEY_FILE / PTA_BROKER_MFA_KEY);"
                " make one with `pta-broker mfa keygen FILE`"
            ),
        )

    def call(self, method: str, request: Message) -> Message:
        """Run the method on the store."""
        return self._admin.call(method, request)

    def close(self) -> None:
        """Close the store."""
        self.store.close()


def open_backend(args: argparse.Namespace) -> Backend:
    """The backend the command line names.

    Raises:
        Usage: None named, or a broker without a certificate.
        StoreUnavailable: The store (PostgreSQL) does not answer.
    """
    if broker := getattr(args, "broker", None):  # Wins over a store named by environment.
        if not args.admin_cert:
            raise Usage("--broker needs --admin-cert DIR (made by `pta-broker admin issue`)")
        try:
            return Remote(broker, Path(args.admin_cert))
        except OSError as error:
            raise Usage(
                f"--admin-cert {args.admin_cert}: {error.strerror or error} (a directory"
                " written by `pta-broker admin issue --out DIR`)"
            ) from None
    if url := store_url(vars(args), os.environ):
        return Local(open_store(url=url), None, args)
    if not args.data_dir:
        raise Usage(WHERE)
    data = Path(args.data_dir)
    if not (data / "ca.pem").exists():
        raise Usage(f"{data} holds no broker: run `pta-broker serve` once")
    return Local(open_store(data), data, args)


def ask(backend: Backend, request: Message, answer: type[_Answer]) -> _Answer:
    """Run the method ``request`` is for (``FooRequest`` is ``Foo``'s) and type its answer.

    Raises:
        TypeError: The method answered another type than ``answer`` (a programming error).
    """
    got = backend.call(type(request).__name__.removesuffix("Request"), request)
    if not isinstance(got, answer):
        raise TypeError(f"{type(request).__name__} is answered {type(got).__name__}")
    return got
