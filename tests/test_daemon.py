"""``tooling/daemon.py``: the one way the test directories' processes start and stop."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import pytest

from tooling.daemon import Daemon, DaemonExited, group_members

if TYPE_CHECKING:
    from pathlib import Path

#: A parent that forks a child into its group and both sleep: a prefork server in miniature.
FORKING = (
    "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('up', flush=True)\n"
    "time.sleep(60)"
)


class TestDaemon:
    """Ready when it answers; a death before that says why; a stop takes the whole group."""

    def test_ready_then_stopped_with_its_children(self, tmp_path: Path) -> None:
        """Start waits for ready(); stop leaves no member of its process group."""
        output = tmp_path / "out.log"
        daemon = Daemon("forker", [sys.executable, "-c", FORKING], output)
        daemon.start(lambda: "up" in output.read_text(), timeout=10)
        assert daemon.pid is not None
        pgid = daemon.pid
        deadline = time.monotonic() + 5
        while len(group_members(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(group_members(pgid)) == 2
        daemon.stop(timeout=2)
        assert group_members(pgid) == []
        daemon.stop(timeout=2)  # Idempotent.

    def test_death_before_ready_ends_with_its_output(self, tmp_path: Path) -> None:
        """A server that exits first: DaemonExited, with the tail of what it said."""
        argv = [sys.executable, "-c", "import sys; print('port taken'); sys.exit(3)"]
        daemon = Daemon("quitter", argv, tmp_path / "out.log")
        with pytest.raises(DaemonExited, match=r"quitter exited with 3: port taken"):
            daemon.start(lambda: False, timeout=10)
        assert daemon.pid is None

    def test_silence_times_out_and_is_stopped(self, tmp_path: Path) -> None:
        """Never ready: RuntimeError after the timeout, and nothing left running."""
        daemon = Daemon(
            "mute", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "o"
        )
        with pytest.raises(RuntimeError, match=r"mute did not answer within 0\.3 s"):
            daemon.start(lambda: False, timeout=0.3)
        assert daemon.pid is None
