"""Every store implementation, opened on a fresh location: what store tests run against."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from broker.store import open_store

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from broker.store.protocols import Store
    from tooling.postgres import Postgres


def _sqlite(_: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    return lambda: open_store(tmp_path)


_DATABASES = itertools.count()


def _postgres(request: pytest.FixtureRequest, _: Path) -> Callable[[], Store]:
    server: Postgres = request.getfixturevalue("postgres")
    url = server.new_database(f"contract_{next(_DATABASES)}")
    return lambda: open_store(url=url)


#: How each implementation is opened on a fresh location: a function of the test's request
#: (for the fixtures it needs) and its temporary directory, returning an opener.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Callable[[], Store]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}
