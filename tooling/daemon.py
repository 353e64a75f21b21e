"""A server process for tests and the demo: started in its own group, awaited, stopped whole.

slapd, Samba and PostgreSQL are run the same way: output to a file (never a pipe nobody drains),
their own process group (the terminal's Ctrl-C is ours to handle, and a stop takes every forked
worker), "ready" meaning the server answered a real request, and a failure that ends with the
tail of the server's own output.  PostgreSQL's workers leave the group (each calls ``setsid``
so that the postmaster can signal it with its own children): the leader's children are
signalled and awaited with the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = structlog.get_logger()
_PR_SET_PDEATHSIG = 1


class Credentials(TypedDict):
    """``subprocess`` arguments that run a child as another user (see :func:`as_user`)."""

    user: int | None
    group: int | None
    extra_groups: list[int] | None


class DaemonExited(RuntimeError):
    """The server died before it answered (e.g. its port was taken meanwhile)."""


def tail(text: str, limit: int = 2000) -> str:
    """The end of a program's output, for an error message."""
    return text[-limit:].strip() or "(no output)"


class Daemon:
    """One server process; :meth:`start` returns once ``ready()`` is true, :meth:`stop` ends it."""

    def __init__(  # noqa: PLR0913 - keyword-only knobs, each with a default
        self,
        name: str,
        argv: Sequence[str | Path],
        output: Path,
        *,
        hold_stdin: bool = False,
        die_with_parent: bool = False,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
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
            user: Run it as this system user (PostgreSQL refuses root); see :func:`as_user`.
            stop_signal: What :meth:`stop` sends first.  PostgreSQL's postmaster wants SIGINT
                ("fast" shutdown: it ends its sessions); its SIGTERM waits for clients to leave.
        """
        self.name = name
        self._argv = list(argv)
        self.output = output
        self._hold_stdin = hold_stdin
        self._die_with_parent = die_with_parent
        self._user = user
        self._stop_signal = stop_signal
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
                **as_user(self._user),
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

    def send(self, signum: signal.Signals) -> None:
        """Signal the group, then the leader's children that left it (see the module's doc).

        The leader first: once it is stopped (SIGSTOP) it forks no child behind our back.

        Raises:
            RuntimeError: Not running.
        """
        if self._proc is None:
            msg = f"{self.name} is not running"
            raise RuntimeError(msg)
        _signal([self._proc.pid], signum, group=True)
        _signal(_left_group(self._proc.pid), signum)

    def stop(self, *, timeout: float) -> None:
        """Send the stop signal, SIGKILL what lingers, wait until no process of it is left.

        Idempotent. A prefork server's workers may outlive their parent a moment: the group,
        and the leader's children that left it, are watched in ``/proc`` until none is left.
        Those children get no stop signal: their leader ends them (a postmaster does, in
        order); they are SIGKILLed with it only if they linger.  A frozen (SIGSTOP) server is
        thawed after the signal, so that it acts on it.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        strays = _left_group(proc.pid)
        _signal([proc.pid], self._stop_signal, group=True)  # pid is its own group's id
        _signal(strays, signal.SIGCONT)
        _signal([proc.pid], signal.SIGCONT, group=True)
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (members := group_members(proc.pid) + _alive(strays)) and (
            time.monotonic() < deadline + timeout
        ):
            if time.monotonic() > deadline:
                _signal([proc.pid], signal.SIGKILL, group=True)
                _signal(strays, signal.SIGKILL)
            time.sleep(0.01)
        if members:
            log.warning("daemon.unkillable", name=self.name, pids=members)
        proc.wait()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return tail(self.output.read_text(errors="replace"))
        return "(no output)"


def as_user(name: str | None) -> Credentials:
    """Arguments for ``subprocess`` that run a child as ``name`` (None: as ourselves).

    The child gets the user's primary group and *no* supplementary groups: without
    ``extra_groups=[]`` it would keep root's. ``subprocess`` switches before ``preexec_fn`` runs,
    so a parent-death signal armed there survives (the kernel clears it on a credential change).

    Raises:
        KeyError: No such user.
    """
    if name is None:
        return {"user": None, "group": None, "extra_groups": None}
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in a process group, read from ``/proc``."""
    return [pid for pid, _, group in _live_processes() if group == pgid]


def children(parent: int) -> list[int]:
    """Pids of a process's live (not zombie) children, read from ``/proc``."""
    return [pid for pid, ppid, _ in _live_processes() if ppid == parent]


def _left_group(leader: int) -> list[int]:
    """Pids of a group leader's live children that have left its group (PostgreSQL's)."""
    return [pid for pid, ppid, group in _live_processes() if ppid == leader and group != leader]


def _alive(pids: list[int]) -> list[int]:
    live = {pid for pid, _, _ in _live_processes()}
    return [pid for pid in pids if pid in live]


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process that is not a zombie."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if fields[0] != "Z":
                found.append((int(stat.parent.name), int(fields[1]), int(fields[2])))
    return found


def _signal(pids: list[int], signum: signal.Signals, *, group: bool = False) -> None:
    """Send a signal to each process (or each process group), ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if group else os.kill)(pid, signum)


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
