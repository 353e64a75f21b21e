"""``tooling/daemon.py``: the one way the test directories' processes start and stop."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from tooling.daemon import Daemon, DaemonExited, children, group_members

#: A parent that forks a child into its group and both sleep: a prefork server in miniature.
FORKING = (
    "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('up', flush=True)\n"
    "time.sleep(60)"
)
#: A parent whose child leaves its group (PostgreSQL's workers call setsid) and ignores SIGTERM.
LEAVING = (
    "import os, signal, time\nif os.fork() == 0:\n    os.setsid()\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(60)\n"
    "print('up', flush=True)\ntime.sleep(60)"
)
#: A server that ignores SIGTERM and stops on SIGINT, as a postmaster's fast shutdown.
ON_SIGINT = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\ntime.sleep(60)"
)


class TestDaemon:
    """Ready when it answers; a death before that says why; a stop takes the whole group."""

    def test_ready_then_stopped_with_its_children(self, tmp_path: Path) -> None:
        """Start waits for ready(); stop leaves no member of its process group."""
        daemon = _started(tmp_path, FORKING)
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

    def test_stop_signal(self, tmp_path: Path) -> None:
        """A server that stops on another signal is sent that one, not SIGTERM and a SIGKILL."""
        daemon = _started(tmp_path, ON_SIGINT, stop_signal=signal.SIGINT)
        began = time.monotonic()
        daemon.stop(timeout=5)
        assert time.monotonic() - began < 5
        assert "KeyboardInterrupt" in daemon.output.read_text()  # Python's answer to SIGINT


class TestChildrenOutsideTheGroup:
    """A child that left the group (its own session) is still signalled and stopped with it."""

    def _start(self, tmp_path: Path) -> tuple[Daemon, int]:
        daemon = _started(tmp_path, LEAVING)
        assert daemon.pid is not None
        pid = daemon.pid
        deadline = time.monotonic() + 5
        while not (strays := [c for c in children(pid) if c not in group_members(pid)]):
            assert time.monotonic() < deadline, "the child never left the group"
            time.sleep(0.01)
        return daemon, strays[0]

    def test_send_reaches_it(self, tmp_path: Path) -> None:
        """SIGSTOP freezes the leader and the child; SIGCONT thaws both."""
        daemon, child = self._start(tmp_path)
        assert daemon.pid is not None
        both = (daemon.pid, child)
        try:
            daemon.send(signal.SIGSTOP)
            assert _wait_state(both, "T") == ["T", "T"]
            daemon.send(signal.SIGCONT)
            assert "T" not in _wait_state(both, "S")
        finally:
            daemon.stop(timeout=0.5)

    def test_stop_kills_it_when_it_lingers(self, tmp_path: Path) -> None:
        """The child ignores the end of its leader: SIGKILLed at the deadline, and awaited."""
        daemon, child = self._start(tmp_path)
        daemon.stop(timeout=0.5)
        assert not Path(f"/proc/{child}").exists() or _state(child) == "Z"

    def test_send_to_a_stopped_daemon_is_a_mistake(self, tmp_path: Path) -> None:
        """Signalling a server that is not running says so."""
        daemon = Daemon("never", [sys.executable, "-c", "pass"], tmp_path / "out.log")
        with pytest.raises(RuntimeError, match="never is not running"):
            daemon.send(signal.SIGCONT)


def _started(tmp_path: Path, script: str, stop_signal: signal.Signals = signal.SIGTERM) -> Daemon:
    """A Python script run as a daemon, ready once it printed ``up``."""
    output = tmp_path / "out.log"
    daemon = Daemon("script", [sys.executable, "-c", script], output, stop_signal=stop_signal)
    daemon.start(lambda: "up" in output.read_text(), timeout=10)
    return daemon


def _state(pid: int) -> str:
    """A process's state letter from ``/proc`` (R, S, T for stopped, Z for zombie)."""
    return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]


def _wait_state(pids: tuple[int, ...], wanted: str, timeout: float = 5) -> list[str]:
    """Each process's state once all are in ``wanted`` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while (states := [_state(pid) for pid in pids]) != [wanted] * len(pids):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return states
