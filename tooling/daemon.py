"""A server process for tests and the demo: started in its own group, awaited, stopped whole.

slapd and Samba are run the same way: output to a file (never a pipe nobody drains), their own
process group (the terminal's Ctrl-C is ours to handle, and a stop takes every forked worker),
"ready" meaning the server answered a real request, and a failure that ends with the tail of
the server's own output.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = structlog.get_logger()
_PR_SET_PDEATHSIG = 1


class DaemonExited(RuntimeError):
    """The server died before it answered (e.g. its port was taken meanwhile)."""


def tail(text: str, limit: int = 2000) -> str:
    """The end of a program's output, for an error message."""
    return text[-limit:].strip() or "(no output)"


class Daemon:
    """One server process; :meth:`start` returns once ``ready()`` is true, :meth:`stop` ends it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        output: Path,
        *,
        hold_stdin: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        """Describe the process; nothing runs until :meth:`start`.

        Args:
            name: For messages ("slapd", "samba").
            argv: The command.
            output: Where its stdout and stderr go.
            hold_stdin: Give it a pipe as stdin and keep it open: a server that stops at EOF
                (``samba -i``) then stops when this process dies, however it dies.
            die_with_parent: Have the kernel SIGTERM it when this process dies, even by
                SIGKILL (Linux; armed only from the main thread, see :func:`_die_with_parent`).
        """
        self.name = name
        self._argv = list(argv)
        self.output = output
        self._hold_stdin = hold_stdin
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id (its group's id too)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, ready: Callable[[], bool], *, timeout: float, poll: float = 0.01) -> None:
        """Run it and wait until ``ready()`` says it answers.

        Raises:
            DaemonExited: It exited first; the message ends with its output's tail.
            RuntimeError: It did not answer within ``timeout`` seconds (it is stopped).
        """
        with self.output.open("wb") as sink:
            self._proc = proc = subprocess.Popen(  # noqa: S603 - the caller's fixed argv
                self._argv,
                stdin=subprocess.PIPE if self._hold_stdin else subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent() if self._die_with_parent else None,  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                self._proc = None
                msg = f"{self.name} exited with {proc.returncode}: {self._tail()}"
                raise DaemonExited(msg)
            if time.monotonic() > deadline:
                msg = f"{self.name} did not answer within {timeout} s: {self._tail()}"
                self.stop(timeout=1.0)
                raise RuntimeError(msg)
            time.sleep(poll)

    def stop(self, *, timeout: float) -> None:
        """SIGTERM the whole group, SIGKILL what lingers, wait until no member is left.

        Idempotent. A prefork server's workers may outlive their parent a moment: the group is
        watched in ``/proc`` until it is empty.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # pid is its own group's id
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (members := group_members(proc.pid)) and time.monotonic() < deadline + timeout:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.01)
        if members:
            log.warning("daemon.unkillable", name=self.name, pids=members)
        proc.wait()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return tail(self.output.read_text(errors="replace"))
        return "(no output)"


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in a process group, read from ``/proc``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(stat.parent.name))
    return members


def _die_with_parent() -> Callable[[], None] | None:
    """Make the kernel SIGTERM the child when we die, even by SIGKILL (Linux only).

    atexit and ``__exit__`` do not run when the test runner is killed; the death signal still
    fires. It fires when the spawning *thread* ends, so it is armed only from the main thread,
    whose end is the process's end.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # we died before the signal was armed
            os._exit(1)

    return arm
