"""``PTA_REQUIRE_ALL_SUITES=1``: a test that would be skipped fails instead, saying why.

The Active Directory suites (a real Samba DC) and the only tests proving that the agent refuses
a directory with an unknown CA or the wrong host name skip where Samba cannot run: not
installed, or not root; the PostgreSQL suites (``tests/test_postgres.py``, the ``postgres``
fixture) skip where PostgreSQL is not installed. That is right on a newcomer's laptop and wrong
in CI, where a green run must mean they ran: ``.ci/run`` sets the variable. Every kind of skip
is caught: a ``skip`` or ``skipif`` mark, ``pytest.skip()`` in a test or a fixture (reported at
setup), and a module skipped while it is collected. An expected failure (``xfail``) is not a
skip and stays one.

The hooks are imported into ``tests/conftest.py``; the variable is read once, at configuration,
because ``conftest._no_pta_environment`` hides every ``PTA_*`` variable while a test runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

ENV = "PTA_REQUIRE_ALL_SUITES"
_REQUIRED = pytest.StashKey[bool]()


def configure(config: pytest.Config) -> None:
    """Read the variable once, before any test hides it."""
    config.stash[_REQUIRED] = os.environ.get(ENV) == "1"


def _required(config: pytest.Config) -> bool:
    return config.stash.get(_REQUIRED, False)


def _fail(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip report into a failure whose text is the skip's reason."""
    where, reason = "", str(report.longrepr)
    if isinstance(report.longrepr, tuple):
        path, line, reason = report.longrepr
        where = f" ({path}:{line + 1 if line is not None else '?'})"
    report.outcome = "failed"
    report.longrepr = f"{ENV}=1 requires every suite to run, and this one skipped{where}: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skipped test (at setup or in its call) fails when every suite is required."""
    del call
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and _required(item.config):
        _fail(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module skipped while collected fails too (``pytest.skip(allow_module_level=True)``)."""
    report = yield
    if report.skipped and _required(collector.config):
        _fail(report)
    return report
