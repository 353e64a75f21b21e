"""Session fixtures made of real parts: slapd, PostgreSQL, a broker process, agent processes.

Every secret any test sends is made or registered by ``tests/secrets_registry.py``, and
everything the run writes lives under the run directory, so ``test_secrets.py`` (run last) can
prove that none of them reached a log, the store or any file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import structlog

from tests import require_all
from tests.require_all import pytest_make_collect_report, pytest_runtest_makereport
from tests.secrets_registry import secret
from tests.support import ALICE_PASSWORD, AgentProcess, BrokerProcess
from tooling.postgres import Postgres, postgres_missing_reason
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DOMAIN = "example.com"
USERS = {
    "alice": ALICE_PASSWORD,
    "bob": secret("Bob-pw-2?"),
    "carol": secret("Carol-pw-3#"),
    "o'brien+x,y": secret("Obrien-pw-4$"),
}
#: Users in a password-policy state, and the outcome their right password gets.
STATE_USERS = {
    "locked-out": (secret("Locked-pw-5%"), {"locked": True}, "ACCOUNT_LOCKED"),
    "must-change": (secret("Change-pw-6&"), {"must_change": True}, "PASSWORD_MUST_CHANGE"),
    "expired": (secret("Expired-pw-7*"), {"expired": True}, "PASSWORD_EXPIRED"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests marked ``scan_last`` after all others: they inspect what the run left."""
    items.sort(key=lambda item: item.get_closest_marker("scan_last") is not None)


__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]  # PTA_REQUIRE_ALL_SUITES


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's markers (``--strict-markers`` refuses unknown ones).

    And read ``PTA_REQUIRE_ALL_SUITES`` (``tests/require_all.py``): with it, a skip fails.
    """
    config.addinivalue_line("markers", "scan_last: run after every other test")
    require_all.configure(config)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_pta_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("PTA_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every process of the run keeps its state and logs."""
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def slapd() -> Iterator[Slapd]:
    """A real OpenLDAP server with the sample users."""
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    users += [
        DirectoryUser(uid=uid, password=pw, **state)  # type: ignore[arg-type]
        for uid, (pw, state, _) in STATE_USERS.items()
    ]
    with Slapd(users=users) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster with an empty ``pta`` database, started on first use.

    Skips where PostgreSQL is missing (a failure under ``PTA_REQUIRE_ALL_SUITES=1``).
    """
    if reason := postgres_missing_reason():
        pytest.skip(reason)
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def broker(run_dir: Path) -> Iterator[BrokerProcess]:
    """A broker process with tenant ``acme`` owning example.com."""
    process = BrokerProcess.start(run_dir, "broker")
    process.add_tenant("acme", DOMAIN)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def agent(broker: BrokerProcess, slapd: Slapd) -> Iterator[AgentProcess]:
    """One agent of ``acme``, connected, checking passwords in slapd."""
    process = AgentProcess.start(broker, slapd, "acme", "agent-acme")
    yield process
    process.stop()
