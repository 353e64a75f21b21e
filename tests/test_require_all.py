"""``tests/require_all.py``: with ``PTA_REQUIRE_ALL_SUITES=1`` every kind of skip fails, saying why.

Run on a small suite of its own in a pytest subprocess, so the outcomes are pytest's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import require_all

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = """
from tests.require_all import configure, pytest_make_collect_report, pytest_runtest_makereport


def pytest_configure(config):
    configure(config)
"""
SUITE = """
import pytest


@pytest.fixture
def no_samba():
    pytest.skip("fixture: no Samba here")


def test_runs():
    pass


@pytest.mark.skipif(True, reason="mark: not root")
def test_marked():
    pass


def test_skips_itself():
    pytest.skip("call: no IPv6 loopback")


def test_needs_samba(no_samba):
    pass


@pytest.mark.xfail(reason="expected", strict=True)
def test_expected_failure():
    assert False
"""
SKIPPED_MODULE = """
import pytest

pytest.skip("module: not installed", allow_module_level=True)
"""


def _run(tmp_path: Path, files: dict[str, str], *, required: bool) -> str:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    environ = {k: v for k, v in os.environ.items() if k != require_all.ENV}
    environ["PYTHONPATH"] = str(ROOT)
    if required:
        environ[require_all.ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=60,
        check=False,
    )
    return done.stdout


class TestRequireAllSuites:
    """Skips are skips by default, and failures carrying their reason when required."""

    def test_skips_without_the_variable(self, tmp_path: Path) -> None:
        """Unset, nothing changes: three skips, one pass, one expected failure."""
        out = _run(tmp_path, {"conftest.py": CONFTEST, "test_suite.py": SUITE}, required=False)
        assert "1 passed, 3 skipped, 1 xfailed" in out, out

    def test_every_skip_fails_with_its_reason(self, tmp_path: Path) -> None:
        """Set, the mark, the test's own skip and the fixture's fail; the xfail stays."""
        out = _run(tmp_path, {"conftest.py": CONFTEST, "test_suite.py": SUITE}, required=True)
        assert "1 failed, 1 passed, 1 xfailed, 2 errors" in out, out
        for reason in ("mark: not root", "call: no IPv6 loopback", "fixture: no Samba here"):
            assert "every suite to run, and this one skipped (" in out
            assert reason in out, (reason, out)
        assert "PASSED test_suite.py::test_runs" in out

    @pytest.mark.parametrize("required", [False, True], ids=["unset", "set"])
    def test_module_skipped_at_collection(self, tmp_path: Path, *, required: bool) -> None:
        """A module that skips itself while collected is an error when suites are required."""
        files = {"conftest.py": CONFTEST, "test_module.py": SKIPPED_MODULE}
        out = _run(tmp_path, files, required=required)
        if required:
            assert "1 error" in out, out
            assert "module: not installed" in out
        else:
            assert "1 skipped" in out, out
