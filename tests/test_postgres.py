"""Tests for the throwaway PostgreSQL cluster that the store's tests, the demo and the bench use.

They run a real PostgreSQL, so they need Debian's ``postgresql`` (``make test`` installs it);
where it is missing they skip with the install command as the reason, and with
``PTA_REQUIRE_ALL_SUITES=1`` (CI) that skip fails the run.
"""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from tests.support import listeners
from tooling import postgres as postgres_module
from tooling.daemon import children, group_members
from tooling.postgres import (
    CONNECT_TIMEOUT,
    STOP_TIMEOUT,
    Postgres,
    find_bindir,
    postgres_missing_reason,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

REASON = postgres_missing_reason()
needs_postgres = pytest.mark.skipif(REASON is not None, reason=REASON or "")
#: How long a paused server is given to (not) answer; the bound of every hang below.
HANG = 1.0
ANSWER_TIMEOUT = 10.0


def query(url: str, text: str = "SELECT 1") -> object:
    """Run one query on a fresh connection and return the first column of its first row."""
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        row = conn.execute(text).fetchone()
    assert row is not None
    return row[0]


@needs_postgres
class TestServer:
    """The session's cluster answers over TCP on 127.0.0.1, as its superuser, in pta's database."""

    def test_answers_over_tcp_as_its_user(self, postgres: Postgres) -> None:
        """The url reaches the pta database as the pta superuser, over TCP to 127.0.0.1."""
        assert postgres.url == f"postgresql://pta@127.0.0.1:{postgres.port}/pta"
        assert query(postgres.url, "SELECT current_user") == "pta"
        assert query(postgres.url, "SELECT current_database()") == "pta"
        assert str(query(postgres.url, "SELECT inet_server_addr()")) == "127.0.0.1"

    def test_listens_on_loopback_only(self, postgres: Postgres) -> None:
        """The kernel has its port bound on 127.0.0.1 alone: no 0.0.0.0, no IPv6."""
        found = {
            (family, address) for family, address, port in listeners() if port == postgres.port
        }
        assert found == {("tcp", "127.0.0.1")}

    def test_throwaway_settings(self, postgres: Postgres) -> None:
        """Durability is traded for speed: the cluster is deleted after the run anyway."""
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            assert query(postgres.url, f"SHOW {name}") == "off", name

    def test_cluster_belongs_to_the_postgres_user_when_root(self, postgres: Postgres) -> None:
        """As root, ``postgres`` owns the data directory: initdb and postgres refuse root."""
        assert postgres.directory is not None
        expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert (postgres.directory / "data").stat().st_uid == expected


@needs_postgres
class TestSideBySide:
    """A second cluster at the same time is a separate server."""

    def test_two_instances(self, postgres: Postgres) -> None:
        """Different ports and directories; a table made in one is absent from the other."""
        with Postgres() as other:
            assert other.port != postgres.port
            assert other.directory != postgres.directory
            with psycopg.connect(other.url, autocommit=True) as conn:
                conn.execute("CREATE TABLE only_here (x int)")
            exists = "SELECT to_regclass('only_here') IS NOT NULL"
            assert query(other.url, exists) is True
            assert query(postgres.url, exists) is False


@needs_postgres
class TestDatabases:
    """Each test (or demo cluster) can have an empty database of its own."""

    def test_new_database_is_empty_and_apart(self, postgres: Postgres) -> None:
        """A new database answers at its URL, and has none of another's tables."""
        url = postgres.new_database("apart_from_pta")
        assert url == f"postgresql://pta@127.0.0.1:{postgres.port}/apart_from_pta"
        assert query(url, "SELECT current_database()") == "apart_from_pta"
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_in_pta (x int)")
        assert query(url, "SELECT to_regclass('only_in_pta') IS NULL") is True


@pytest.fixture(scope="module")
def frozen() -> Iterator[Postgres]:
    """A cluster of its own for the pause tests: a failure must not leave the session's paused."""
    if REASON is not None:
        pytest.skip(REASON)
    with Postgres() as server:
        yield server


@needs_postgres
class TestPause:
    """A paused server hangs every client until it is resumed; clients' timeouts end the wait."""

    def test_new_connection_times_out(self, frozen: Postgres) -> None:
        """While paused, connecting fails after the client's connect timeout, not sooner."""
        frozen.pause()
        try:
            began = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="timeout"):
                psycopg.connect(frozen.url, connect_timeout=CONNECT_TIMEOUT).close()
            assert CONNECT_TIMEOUT - 0.5 < time.monotonic() - began < ANSWER_TIMEOUT
        finally:
            frozen.resume()
        assert query(frozen.url) == 1

    def test_open_session_waits_until_resumed(self, frozen: Postgres) -> None:
        """A query on an open connection gets no answer while paused, and its answer after."""
        with (
            psycopg.connect(frozen.url) as conn,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            conn.execute("SELECT 1")
            frozen.pause()
            try:
                answer = pool.submit(lambda: conn.execute("SELECT 42").fetchone())
                with pytest.raises(concurrent.futures.TimeoutError):
                    answer.result(timeout=HANG)
                assert frozen.paused
            finally:
                frozen.resume()
            assert answer.result(timeout=ANSWER_TIMEOUT) == (42,)
        assert not frozen.paused


@needs_postgres
class TestStop:
    """stop() ends the postmaster and every session, and removes the cluster."""

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_leaves_no_process_and_no_directory(self, *, paused: bool) -> None:
        """Nothing of its process group or its children survives; its port and directory go."""
        server = Postgres()
        server.start()
        assert server.pid is not None
        assert server.directory is not None
        pid, directory, port = server.pid, server.directory, server.port
        session = psycopg.connect(server.url)  # a client still connected does not delay it
        workers = children(pid)
        assert workers  # checkpointer, walwriter, ..., and our session's backend
        if paused:
            server.pause()
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < STOP_TIMEOUT  # a clean shutdown, not the SIGKILL
        session.close()
        assert group_members(pid) == []
        assert [worker for worker in workers if Path(f"/proc/{worker}").exists()] == []
        assert not directory.exists()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        server.stop()  # Idempotent.
        assert (server.url, server.port) == ("", 0)
        assert server.pid is None

    def test_pause_needs_a_running_server(self) -> None:
        """Pausing a server that is not started is a mistake, said as such."""
        with pytest.raises(RuntimeError, match="not started"):
            Postgres().pause()


class TestInstall:
    """The binaries are found where Debian puts them, or the reason says how to install them."""

    def test_missing_binaries_give_the_reason(self, tmp_path: Path) -> None:
        """Without initdb and postgres: a reason naming the fix, and start() raises it."""
        reason = postgres_missing_reason(tmp_path)
        assert reason is not None
        assert "not installed" in reason
        assert str(tmp_path) in reason
        assert "apt-get install" in reason
        server = Postgres(bindir=tmp_path)
        with pytest.raises(RuntimeError, match="PostgreSQL server not installed"):
            server.start()
        assert server.directory is None

    @needs_postgres
    def test_finds_the_installed_binaries(self) -> None:
        """Where it is installed, the directory holds both programs, and nothing is missing."""
        bindir = find_bindir()
        assert bindir is not None
        assert (bindir / "initdb").exists()
        assert (bindir / "postgres").exists()
        assert REASON is None

    def test_workdir_must_be_reachable(self, tmp_path: Path) -> None:
        """A directory inside a 0700 one is not reachable by another user; /tmp is."""
        closed = tmp_path / "closed"
        (closed / "inner").mkdir(parents=True)
        closed.chmod(0o700)
        assert not postgres_module._reachable(closed / "inner")
        assert postgres_module._reachable(Path(tempfile.gettempdir()))
