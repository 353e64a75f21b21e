"""``make demo`` keeps working: the story runs end to end and leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import BIN, ROOT
from tooling.postgres import postgres_missing_reason

POSTGRES_MISSING = postgres_missing_reason()


def _demo(*flags: str) -> str:
    """Run the demo with ``flags`` as a newcomer would, to its end; what it printed."""
    done = subprocess.run(
        [str(BIN / "python"), "-m", "tooling.demo", "--exit", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "everything stopped; nothing left running." in done.stdout
    return done.stdout


def _nothing_left(out: str) -> None:
    """No process of the demo's work directory (named in its output) is left running."""
    workdir = next(w for w in out.split() if "/pta-demo-" in w).split("/pta-demo-")[1]
    leftover = subprocess.run(
        ["pgrep", "-f", "pta-demo-" + workdir.split("/")[0]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leftover.stdout == ""


class TestDemo:
    """``python -m tooling.demo --exit`` as a newcomer runs it (without waiting for Ctrl-C)."""

    def test_demo_signs_users_in_and_cleans_up(self) -> None:
        """Each sign-in gets its expected answer; no process or work directory is left."""
        out = _demo()
        assert "alice@example.com  (a good password): SUCCESS: signed in  [exit 0]" in out
        assert "(a wrong password): INVALID_CREDENTIALS" in out
        assert "(a user the directory does not have): INVALID_CREDENTIALS" in out
        _nothing_left(out)

    @pytest.mark.skipif(POSTGRES_MISSING is not None, reason=POSTGRES_MISSING or "")
    def test_cluster_demo(self) -> None:
        """``--brokers 3``: streams everywhere, sign-ins at each, the lock, a broker killed."""
        out = _demo("--brokers", "3")
        assert "streams: 2 agents x 3 brokers = 6" in out
        assert out.count("a stream at each of broker-1, broker-2, broker-3") == 2
        for n in (1, 2, 3):
            assert f"via broker-{n}: alice@example.com -> SUCCESS: signed in [exit 0]" in out
        assert "bob, his right password -> LOCKED_BY_POLICY" in out
        assert "answers: {'SUCCESS': 30}" in out
        assert "both agents dropped their stream to broker-2" in out
        _nothing_left(out)
