"""A throwaway PostgreSQL cluster for the test suite, the demo and the benchmark.

Several brokers share one PostgreSQL, so the store that talks to it has to be exercised against
a real server: only a real one has PostgreSQL's locks, isolation levels and error codes, and "the
database hangs" can only be staged with a real process to stop.  Each :class:`Postgres` is
private, twin of :class:`tooling.slapd.Slapd`: its own cluster made by ``initdb`` in a temp dir,
a free port on 127.0.0.1 only, one superuser trusted without a password, settings that trade
durability for speed, and a process group (:class:`tooling.daemon.Daemon`) stopped whole on exit.

``initdb`` and ``postgres`` refuse to run as root.  As root (CI, a fresh Debian machine) both run
as the ``postgres`` system user that Debian's package creates, in a directory that user owns.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import psycopg
import structlog
from psycopg import sql

from tooling.daemon import Daemon, DaemonExited, as_user, tail
from tooling.slapd import free_port

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

__all__ = ["INSTALL_COMMAND", "Postgres", "find_bindir", "postgres_missing_reason"]

log = structlog.get_logger()

INSTALL_COMMAND = "apt-get install --no-install-recommends postgresql"
READY_TIMEOUT = 30.0  # a cold start on a busy 2-core machine; usually well under a second
STOP_TIMEOUT = 5.0
INITDB_TIMEOUT = 60.0
CONNECT_TIMEOUT = 2  # seconds; libpq's smallest (it reads 1 as 2)
STATEMENT_TIMEOUT_MS = 30_000  # libpq has no client-side query timeout: the server's bounds ours
SYSTEM_USER = "postgres"  # created by Debian's postgresql-common; initdb/postgres refuse root
_START_ATTEMPTS = 3  # another process may take the free port before postgres binds it
_BINARIES = ("initdb", "postgres")
#: Server settings of a cluster that lives as long as one test run.  A crash (or power cut)
#: would corrupt it, and nobody would care: it is deleted anyway.  So:
_SETTINGS = {
    "listen_addresses": "127.0.0.1",  # never a real interface; the tests check it
    "fsync": "off",  # no flush to disk: commits cost memory copies, not disk latency
    "synchronous_commit": "off",  # a commit does not wait for its WAL to be written
    "full_page_writes": "off",  # torn pages only matter to crash recovery
    "wal_level": "minimal",  # no replica and no archive will ever read this WAL
    "max_wal_senders": "0",  # wal_level=minimal requires it
    "jit": "off",  # compiling a query costs more than the benchmark's short queries take
}


def find_bindir() -> Path | None:
    """Return the directory holding ``initdb`` and ``postgres``, or None when not installed.

    ``pg_config --bindir`` names the configured version, when it is installed (Debian's
    pg_config comes with libpq-dev, and names a server version even when that server is
    missing); else the newest of Debian's ``/usr/lib/postgresql/<major>/bin``.  Never ``$PATH``:
    Debian puts only version-independent wrappers there.
    """
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(  # noqa: S603 - a fixed argv
            [shutil.which("pg_config") or "pg_config", "--bindir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    return next((path for path in candidates if _has_binaries(path)), None)


def postgres_missing_reason(bindir: Path | None = None) -> str | None:
    """Say why no :class:`Postgres` can run here (a pytest skip reason), or None when one can.

    Args:
        bindir: Where to look for the binaries (default: :func:`find_bindir`).
    """
    try:
        _locate(bindir)
    except RuntimeError as missing:
        return str(missing)
    return None


def _locate(bindir: Path | None) -> Path:
    """Return the directory of the binaries to run.

    Raises:
        RuntimeError: PostgreSQL cannot run here; the message says why and how to fix it.
    """
    found = find_bindir() if bindir is None else bindir if _has_binaries(bindir) else None
    if found is None:
        where = "" if bindir is None else f" in {bindir}"
        msg = f"PostgreSQL server not installed (no initdb and postgres{where}): {INSTALL_COMMAND}"
        raise RuntimeError(msg)
    if os.geteuid() == 0:
        try:
            as_user(SYSTEM_USER)
        except KeyError:
            msg = f"running as root, but no {SYSTEM_USER!r} user to run PostgreSQL as"
            raise RuntimeError(msg) from None
    return found


class Postgres:
    """Context manager: a private PostgreSQL cluster on a free 127.0.0.1 port, in its own temp dir.

    Attributes:
        url: ``postgresql://USER@127.0.0.1:PORT/DATABASE`` while started, else ``""``.
        port: The listening port while started, else 0.
        directory: The private temp dir (``data/``, socket, ``postgres.log``) while started.
        database: The database made for pta (the cluster also has ``postgres``).
        user: The cluster's superuser, trusted without a password (from 127.0.0.1 only).

    """

    def __init__(
        self,
        *,
        database: str = "pta",
        user: str = "pta",
        workdir: Path | None = None,
        bindir: Path | None = None,
    ) -> None:
        """Describe the cluster; nothing runs until :meth:`start`.

        Args:
            database: Name of the database created for pta.
            user: Name of the superuser ``initdb`` creates.
            workdir: Parent of the private temp dir (default: the system temp dir).  As root it
                must be reachable by the ``postgres`` user: not inside root's 0700 directories.
            bindir: Where ``initdb`` and ``postgres`` are (default: :func:`find_bindir`).
        """
        self.database, self.user = database, user
        self.url, self.port = "", 0
        self.directory: Path | None = None
        self._workdir, self._bindir = workdir, bindir
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None
        self._daemon: Daemon | None = None
        self._paused = False

    def __repr__(self) -> str:
        """Show where the server is."""
        return f"Postgres(database={self.database!r}, url={self.url!r})"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while started: also its process group's id."""
        return self._daemon.pid if self._daemon is not None else None

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` froze the server (and :meth:`resume` has not thawed it)."""
        return self._paused

    def start(self) -> None:
        """Make the cluster, run the server, wait until it answers, create the database.

        Raises:
            RuntimeError: Already started, PostgreSQL missing, the work dir unreachable for the
                ``postgres`` user, or initdb/postgres failed or did not answer within
                ``READY_TIMEOUT``; the server's failures end with the tail of its output.
        """
        if self.directory is not None:
            msg = "postgres is already started"
            raise RuntimeError(msg)
        bindir = _locate(self._bindir)
        parent = self._workdir or Path(tempfile.gettempdir())
        if self._run_as is not None and not _reachable(parent):
            msg = f"{parent} is not reachable for the {SYSTEM_USER!r} user: pass workdir=/tmp"
            raise RuntimeError(msg)
        began = time.monotonic()
        self.directory = root = Path(tempfile.mkdtemp(prefix="pta-postgres-", dir=parent))
        atexit.register(self.stop)
        try:
            credentials = as_user(self._run_as)
            if credentials["user"] is not None:
                os.chown(root, credentials["user"], credentials["group"] or -1)
            self._initdb(bindir, root)
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._spawn(bindir, root)
                    break
                except DaemonExited:
                    if attempt == _START_ATTEMPTS:
                        raise
            with self._connect("postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"
        log.info("postgres.started", url=self.url, seconds=round(time.monotonic() - began, 3))

    def new_database(self, name: str) -> str:
        """Create another empty database in the running cluster; its URL.

        A fresh store for each test, or for each cluster the demo starts: cheaper (tens of
        milliseconds) than a cluster of its own.

        Raises:
            RuntimeError: Not started.
            psycopg.Error: The database exists already, or the server refused.
        """
        self._running()
        with self._connect("postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def _initdb(self, bindir: Path, root: Path) -> None:
        """Make the cluster: UTF-8, C collation (fast, the same everywhere), no fsync."""
        argv: list[str | Path] = [bindir / "initdb", "-D", root / "data", "-A", "trust"]
        argv += ["-U", self.user, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        done = subprocess.run(  # noqa: S603 - our fixed argv
            argv,
            capture_output=True,
            text=True,
            timeout=INITDB_TIMEOUT,
            check=False,
            cwd=root,  # the postgres user may not be allowed into our working directory
            **as_user(self._run_as),
        )
        if done.returncode != 0:
            msg = f"initdb failed with {done.returncode}: {tail(done.stdout + done.stderr)}"
            raise RuntimeError(msg)

    def _spawn(self, bindir: Path, root: Path) -> None:
        """Run the postmaster on a free port; ready when it answers a query as our cluster."""
        port = free_port()
        argv: list[str | Path] = [bindir / "postgres", "-D", root / "data", "-p", str(port)]
        argv += ["-k", root]  # its Unix socket stays in our directory, not /var/run/postgresql
        for name, value in _SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        self._daemon = Daemon(
            "postgres",
            argv,
            root / "postgres.log",
            die_with_parent=True,
            user=self._run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown: end the sessions, don't wait for them
        )
        self.port = port
        try:
            self._daemon.start(lambda: self._answers(root / "data"), timeout=READY_TIMEOUT)
        except BaseException:
            self._daemon, self.port = None, 0
            raise

    def _connect(self, database: str, *, autocommit: bool = False) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname=database,
            connect_timeout=CONNECT_TIMEOUT,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            autocommit=autocommit,
        )

    def _answers(self, data: Path) -> bool:
        """Whether the server on our port answers a query, and is the cluster in ``data``.

        Reading back the data directory, not just ``SELECT 1``, proves the server is ours and
        not a stranger that took the port.
        """
        try:
            with self._connect("postgres") as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.Error:
            return False
        return row is not None and Path(str(row[0])) == data

    def pause(self) -> None:
        """Freeze the postmaster and every session (SIGSTOP): PostgreSQL hung, not down.

        The kernel still accepts TCP connections into the listen backlog, and open connections
        stay open: clients connect, or send their query, and then wait for an answer that never
        comes.  Only their own timeouts end the wait.

        Raises:
            RuntimeError: Not started.
        """
        self._running().send(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT): the clients still waiting get their answers.

        Raises:
            RuntimeError: Not started.
        """
        self._running().send(signal.SIGCONT)
        self._paused = False

    def _running(self) -> Daemon:
        if self._daemon is None:
            msg = "postgres is not started"
            raise RuntimeError(msg)
        return self._daemon

    def stop(self) -> None:
        """Shut the server down (a paused one too: it is thawed) and remove the temp dir.

        Idempotent; also registered with :mod:`atexit` so that an interpreter exit that skips
        ``__exit__`` leaves no process behind.  The postmaster ends its sessions and helpers
        itself; :meth:`Daemon.stop` waits until none of them is left.
        """
        atexit.unregister(self.stop)
        daemon, self._daemon, self._paused, self.url, self.port = self._daemon, None, False, "", 0
        if daemon is not None:
            daemon.stop(timeout=STOP_TIMEOUT)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            log.debug("postgres.stopped", database=self.database)

    def __enter__(self) -> Self:
        """Start the server for the duration of a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server whatever happened inside the block."""
        self.stop()


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _BINARIES)


def _major(bindir: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<major>/bin``: 9.6 < 10 < 15 < 16."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def _reachable(path: Path) -> bool:
    """Whether every directory from ``/`` to ``path`` lets other users through (``o+x``)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))
