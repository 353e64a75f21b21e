"""``broker/store/postgres/``: its schema's versions, a server that goes away, its URL's password.

What every store promises is in ``test_contract.py``, run against PostgreSQL too; here is what
only a shared server has: several brokers opening (and migrating) one store at once, a store
migrated by a newer broker, the server stopped under a handle, a password in the URL.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import socket
import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest

from broker.config import load_config
from broker.store import open_store
from broker.store.location import redact
from broker.store.postgres import schema
from broker.store.postgres.db import POOL_TIMEOUT, UNAVAILABLE
from pta.errors import StoreTooNew, StoreUnavailable
from tooling.postgres import Postgres, postgres_missing_reason
from tooling.slapd import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from broker.store.protocols import Store

REASON = postgres_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
_DATABASES = itertools.count()
#: A password the tests put in URLs; the cluster trusts 127.0.0.1, so it is never checked.
PASSWORD = "pw-in-the-url-7Hq"
#: A call on a stopped server must fail within this (the pool's wait, and some slack).
FAST = POOL_TIMEOUT + 1.0
#: A server back after an outage is used again within this, with no help.
RECOVERY = 15.0


@pytest.fixture
def url(postgres: Postgres) -> str:
    """A fresh, empty database of the session's server."""
    return postgres.new_database(f"pgstore_{next(_DATABASES)}")


def _with_password(url: str) -> str:
    return url.replace("pta@", f"pta:{PASSWORD}@", 1)


class TestSchemaVersions:
    """The schema is migrated once, whoever opens first; a newer one is refused."""

    def test_concurrent_openers_migrate_once(self, url: str) -> None:
        """Eight migrations race on one empty database: one applies everything, all agree."""
        start = threading.Barrier(8)

        def migrate() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                return schema.migrate(conn, redact(url))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            applied = list(pool.map(lambda _: migrate(), range(8)))
        assert sorted(applied) == [0] * 7 + [len(schema.MIGRATIONS)]
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        assert rows == [(n,) for n in range(1, len(schema.MIGRATIONS) + 1)]

    def test_brokers_starting_together_all_open(self, url: str) -> None:
        """Eight stores opened at once on an empty database: each opens, each sees one schema."""
        start = threading.Barrier(8)

        def open_one(n: int) -> Store:
            start.wait()
            store = open_store(url=url)
            store.add_tenant(f"t{n}", [f"t{n}.example"])
            return store

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            stores = list(pool.map(open_one, range(8)))
        try:
            assert len(stores[0].tenants()) == 8
        finally:
            for store in stores:
                store.close()

    def test_a_newer_schema_is_refused(self, url: str) -> None:
        """A store migrated by a newer pta-broker: refused at open, saying so, changed nothing."""
        open_store(url=url).close()
        newer = len(schema.MIGRATIONS) + 1
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (newer,))
        with pytest.raises(StoreTooNew) as refused:
            open_store(url=_with_password(url))
        message = refused.value.message
        assert f"schema version {newer}, newer than this pta-broker knows" in message
        assert "upgrade" in message
        assert PASSWORD not in message
        assert "pta:***@127.0.0.1" in message
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        assert row == (newer,)


@pytest.fixture
def stopping() -> Iterator[Postgres]:
    """A server of its own, for a test that stops it."""
    with Postgres() as server:
        yield server


class TestServerGone:
    """A stopped server: every call fails at once with StoreUnavailable, naming no secret."""

    def test_calls_fail_fast_once_stopped(self, stopping: Postgres) -> None:
        """A handle in use; the server stops; each kind of call fails within the bound."""
        url = _with_password(stopping.url)
        store = open_store(url=url)
        try:
            store.add_tenant("acme", ["example.com"])
            assert store.tenant_for_domain("example.com") == "acme"
            stopping.stop()
            calls: list[Callable[[], object]] = [
                store.changed,
                store.tenants,
                lambda: store.policy.use_mfa_step("acme", "alice", 1),
                lambda: store.agents.revoke("agt"),
                lambda: store.add_tenant("globex", ["globex.example"]),
            ]
            for call in calls:
                began = time.monotonic()
                with pytest.raises(StoreUnavailable) as failed:
                    call()
                assert time.monotonic() - began < FAST
                assert failed.value.message == UNAVAILABLE
                assert failed.value.detail.startswith(redact(url))
                assert PASSWORD not in failed.value.detail
                assert PASSWORD not in repr(failed.value)
        finally:
            store.close()

    def test_opening_fails_fast_and_says_why(self, stopping: Postgres) -> None:
        """Nothing listens: opening fails at once, with the reason and the redacted URL."""
        url = _with_password(stopping.url)
        stopping.stop()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as failed:
            open_store(url=url)
        assert time.monotonic() - began < FAST
        assert "Connection refused" in failed.value.detail
        assert PASSWORD not in failed.value.detail


class Gate:
    """A TCP forwarder to a server, on a port of its own, that can be shut and opened again.

    Shut, it resets every forwarded connection and refuses new ones, as a stopped server does;
    opened again on the same port, it is the server coming back (a Postgres fixture cannot be
    restarted on its port).
    """

    def __init__(self, target: int) -> None:
        """Forward to 127.0.0.1:``target``; nothing listens until :meth:`open`."""
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        """Listen and forward."""
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def shut(self) -> None:
        """Refuse new connections and cut the forwarded ones."""
        if self._listener is not None:
            # Closing alone would leave the accepting thread blocked on a listening socket.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()


class TestServerBack:
    """After an outage the store is used again by itself: no restart of the broker."""

    def test_recovers_on_its_own(self, url: str, postgres: Postgres) -> None:
        """Cut off: calls fail at once; reachable again: calls succeed within the bound."""
        gate = Gate(postgres.port)
        gate.open()
        store = open_store(url=url.replace(f":{postgres.port}/", f":{gate.port}/"))
        try:
            store.add_tenant("acme", ["example.com"])
            gate.shut()
            for _ in range(3):
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    store.tenants()
                assert time.monotonic() - began < FAST
            time.sleep(3)  # Long enough for the pool's reconnection to back off.
            gate.open()
            began = time.monotonic()
            while True:
                with contextlib.suppress(StoreUnavailable):
                    assert list(store.tenants()) == ["acme"]
                    break
                assert time.monotonic() - began < RECOVERY
                time.sleep(0.25)  # A broker's tick.
            print(f"\nstore back in use {time.monotonic() - began:.2f} s after the server")  # noqa: T201
        finally:
            store.close()
            gate.shut()


class TestPasswordInTheUrl:
    """A URL's password is shown nowhere: not by the store, its errors, nor the configuration."""

    @pytest.mark.parametrize(
        ("given", "shown"),
        [
            ("postgresql://pta:s3cr@t@db:5432/pta", "postgresql://pta:***@db:5432/pta"),
            (
                "postgres://u:p@h1:1,h2:2/d?sslmode=require",
                "postgres://u:***@h1:1,h2:2/d?sslmode=require",
            ),
            (
                "postgresql://u@h/d?password=p&sslmode=x",
                "postgresql://u@h/d?password=***&sslmode=x",
            ),
            ("postgresql://u@h/d?a=1&PASSWORD=p", "postgresql://u@h/d?a=1&PASSWORD=***"),
            ("postgresql://h/d", "postgresql://h/d"),
            ("host=h password=p", "(not a postgresql:// URL)"),
        ],
        ids=["user-part", "several-hosts", "query", "query-upper", "no-user", "conninfo"],
    )
    def test_redact(self, given: str, shown: str) -> None:
        """Both places libpq reads a password from are masked; what is not a URL is not shown."""
        assert redact(given) == shown

    def test_store_and_configuration_hide_it(self, url: str, tmp_path: Path) -> None:
        """The store's repr, the configuration's repr and what it shows have no password."""
        secret_url = _with_password(url)
        store = open_store(url=secret_url)
        try:
            assert PASSWORD not in repr(store)
        finally:
            store.close()
        config = load_config({"data_dir": str(tmp_path)}, {"PTA_STORE": secret_url})
        assert config.store == secret_url
        assert PASSWORD not in repr(config)
        assert PASSWORD not in config.store_shown


class TestChangesCounter:
    """A write at one handle is announced at another's next ``changed``."""

    def test_seen_at_the_next_poll(self, url: str) -> None:
        """The write's commit to another handle's ``changed``: one poll (measured, printed)."""
        writer, reader = open_store(url=url), open_store(url=url)
        try:
            reader.changed()
            delays = []
            for n in range(20):
                writer.add_tenant(f"t{n}", [f"t{n}.example"])
                committed = time.perf_counter()
                polls = 1
                while not reader.changed():
                    polls += 1
                delays.append((time.perf_counter() - committed, polls))
            assert all(polls == 1 for _, polls in delays)
            worst = max(d for d, _ in delays)
            print(f"\nchanges: seen at the first poll, within {worst * 1000:.2f} ms")  # noqa: T201
        finally:
            writer.close()
            reader.close()
