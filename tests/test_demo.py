"""``make demo`` keeps working: the story runs end to end and leaves nothing behind."""

from __future__ import annotations

import subprocess

from tests.support import BIN, ROOT


class TestDemo:
    """``python -m tooling.demo --exit`` as a newcomer runs it (without waiting for Ctrl-C)."""

    def test_demo_signs_users_in_and_cleans_up(self) -> None:
        """Each sign-in gets its expected answer; no process or work directory is left."""
        done = subprocess.run(
            [str(BIN / "python"), "-m", "tooling.demo", "--exit"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "alice@example.com  (a good password): SUCCESS: signed in  [exit 0]" in out
        assert "(a wrong password): INVALID_CREDENTIALS" in out
        assert "(a user the directory does not have): INVALID_CREDENTIALS" in out
        assert "everything stopped; nothing left running." in out
        workdir = next(w for w in out.split() if "/pta-demo-" in w).split("/pta-demo-")[1]
        leftover = subprocess.run(
            ["pgrep", "-f", "pta-demo-" + workdir.split("/")[0]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert leftover.stdout == ""
