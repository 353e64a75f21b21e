"""What the broker keeps: protocols by aggregate, their records, and the implementations.

Everything above this package is typed against :mod:`broker.store.protocols`; only
:mod:`broker.store.sqlite` and :mod:`broker.store.postgres` know SQL. :func:`open_store` is
where an implementation is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.store.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

    from broker.store.protocols import Store


def open_store(data_dir: Path | None = None, *, url: str = "") -> Store:
    """Open the broker's store: PostgreSQL at ``url`` when given, else SQLite in ``data_dir``.

    Args:
        data_dir: The broker's data directory (the embedded store is created there).
        url: ``postgresql://…``: the store several brokers share (migrated if needed).

    Raises:
        ValueError: Neither is given, or ``url`` is not a PostgreSQL URL.
        StoreUnavailable: PostgreSQL cannot be reached.
        StoreTooNew: Its schema is newer than this program knows.
    """
    if url:
        # Imported here: psycopg is loaded by the processes that use it only.
        from broker.store.postgres.store import PostgresStore  # noqa: PLC0415

        return PostgresStore(url)
    if data_dir is None:
        raise ValueError("a store is a --data-dir (SQLite) or a --store URL (PostgreSQL)")
    return SqliteStore(data_dir)
