"""What the broker keeps: protocols by aggregate, their records, and the implementations.

Everything above this package is typed against :mod:`broker.store.protocols`; only
:mod:`broker.store.sqlite` knows SQL. :func:`open_store` is where an implementation is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.store.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

    from broker.store.protocols import Store


def open_store(data_dir: Path) -> Store:
    """Open (and create) the broker's store: SQLite in ``data_dir``, the embedded default."""
    return SqliteStore(data_dir)
