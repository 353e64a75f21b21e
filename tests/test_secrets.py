"""After everything else ran: no secret a test sent reached a log, the store or any other file.

The secrets are the registry's (``tests/secrets_registry.py``): every password, code and token
the suite sent, made or registered there (``tests/test_secrets_registry.py`` keeps it so). The
files are everything under the run directory, read once every process has stopped: each broker
has closed its store, so SQLite's database file (and a write-ahead log, where one is left)
holds all it ever wrote. A secret is looked for as UTF-8, UTF-16 and a JSON string; a password
also as its plain SHA-256, which would let anyone holding the file test guesses offline (the
repeat memory's keyed hashes never leave the broker's memory). An enrolment token's secret is
the one secret whose SHA-256 the store keeps, by design: that, and only that, must be there.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests import secrets_registry

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import AgentProcess, BrokerProcess

STORE = "pta.sqlite3"
_TAIL_UTF16 = re.compile(
    re.escape(secrets_registry.MARK.encode("utf-16-le"))
    + b"(?:[A-Za-z0-9]\x00){"
    + str(secrets_registry.TAIL_CHARS).encode()
    + b"}"
)
_TAIL_UTF8 = re.compile(secrets_registry.TAIL.pattern.encode())
_HEX_DIGEST = re.compile(rb"[0-9a-f]{64}")
_DIGEST_BYTES = 32


class _Needles:
    """What to look for, taken from the registry once every test has registered its secrets."""

    def __init__(self) -> None:
        self.fresh = dict(secrets_registry.BY_TAIL)
        given = secrets_registry.GIVEN | set(secrets_registry.ENROLMENT)
        self.long = {v for v in given if len(v) >= secrets_registry.SHORT}
        self.short = given - self.long
        digests = {hashlib.sha256(p.encode()).digest(): p for p in secrets_registry.passwords()}
        self.digests = digests
        self.hex_digests = {d.hex().encode(): p for d, p in digests.items()}

    def count(self) -> int:
        """How many secrets are looked for."""
        return len(self.fresh) + len(self.long) + len(self.short)

    def _fresh_in(self, data: bytes) -> set[str]:
        found = set()
        for pattern, encoding in ((_TAIL_UTF8, "utf-8"), (_TAIL_UTF16, "utf-16-le")):
            for match in pattern.finditer(data):
                tail = match.group().decode(encoding)[len(secrets_registry.MARK) :]
                value = self.fresh.get(tail)
                if value is None:
                    continue
                needle = value.encode(encoding)
                if data[match.end() - len(needle) : match.end()] == needle:
                    found.add(value)
        return found

    def in_file(self, path: Path, data: bytes) -> set[str]:
        """The secrets ``data`` (the bytes of ``path``) holds, or whose plain digest it holds."""
        found = self._fresh_in(data)
        found |= {
            v
            for v in self.long
            if v.encode() in data or v.encode("utf-16-le") in data or json.dumps(v).encode() in data
        }
        if path.suffix == ".log":  # Short ones only as a whole JSON string: see SHORT.
            found |= {v for v in self.short if json.dumps(v).encode() in data}
        found |= {
            f"sha256({self.hex_digests[m.group()]})"
            for m in _HEX_DIGEST.finditer(data)
            if m.group() in self.hex_digests
        }
        if path.name.startswith(STORE):  # The store's blobs: raw digests, at any offset.
            windows = {data[i : i + _DIGEST_BYTES] for i in range(len(data) - _DIGEST_BYTES + 1)}
            found |= {f"sha256({self.digests[d]})" for d in windows & self.digests.keys()}
        return found


@pytest.fixture(scope="module")
def at_rest(run_dir: Path, broker: BrokerProcess, agent: AgentProcess) -> list[Path]:
    """Every file the run wrote, once the last agent and broker (the session's) have stopped.

    The other processes stopped with their modules. A broker that stops closes its store, and
    SQLite moves its write-ahead log into the database file: nothing is left in memory only.
    """
    agent.stop()
    broker.stop()
    assert broker.process.returncode == 0, "the session's broker did not stop cleanly"
    return sorted(p for p in run_dir.rglob("*") if p.is_file())


@pytest.mark.scan_last
class TestNoSecretAtRest:
    """Scans every file the run wrote: broker data and stores, agent state, every log."""

    def test_no_secret_in_any_file(self, run_dir: Path, at_rest: list[Path]) -> None:
        """None of the secrets the tests sent appears in any file, in any common encoding."""
        assert len(at_rest) > 5, "the run wrote too little to be worth scanning"
        stores = [p for p in at_rest if p.name.startswith(STORE)]
        assert stores, "no broker store was scanned"
        needles = _Needles()
        assert needles.count() > 0
        found = sorted(
            (str(path.relative_to(run_dir)), secret)
            for path in at_rest
            for secret in needles.in_file(path, path.read_bytes())
        )
        print(  # noqa: T201 - the scan's reach, for the record
            f"\nsecret scan: {needles.count()} secrets in {len(at_rest)} files "
            f"({len(stores)} store files, {sum(p.stat().st_size for p in at_rest)} bytes)"
        )
        assert found == []

    def test_enrolment_secret_is_stored_only_as_its_hash(
        self, run_dir: Path, at_rest: list[Path]
    ) -> None:
        """Each token still in its broker's store has the secret's SHA-256, never the secret.

        (A token an operator deleted is gone from the table; its secret is still looked for.)
        """
        checked = 0
        for token_secret, (data_dir, token_id) in secrets_registry.ENROLMENT.items():
            store = data_dir / STORE
            if not store.is_relative_to(run_dir) or store not in at_rest:
                continue  # A unit test's token, issued by no broker of this run.
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                row = db.execute("SELECT secret_hash FROM tokens WHERE id = ?", (token_id,))
                stored = row.fetchone()
            if stored is None:
                continue
            digest = hashlib.sha256(token_secret.encode()).digest()
            assert stored[0] == digest
            files = [p for p in at_rest if p.parent == data_dir and p.name.startswith(STORE)]
            contents = b"".join(p.read_bytes() for p in files)
            assert digest in contents
            assert token_secret.encode() not in contents
            checked += 1
        assert checked >= 1, "no enrolment token to prove it with"
