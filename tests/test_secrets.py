"""After everything else ran: no password used anywhere reached a log, the store or a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import PASSWORDS

if TYPE_CHECKING:
    from pathlib import Path

    from pta.slapd import Slapd


@pytest.mark.scan_last
class TestNoSecretAtRest:
    """Scans every file the run wrote: broker data, agent state, every process's log."""

    def test_no_password_in_any_file(self, run_dir: Path, slapd: Slapd) -> None:
        """None of the passwords the tests sent appears in any file, in any common encoding."""
        del slapd  # The directory's own files hold password hashes by design: not scanned.
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert len(files) > 5, "the run wrote too little to be worth scanning"
        needles = {pw: (pw.encode(), pw.encode("utf-16-le")) for pw in PASSWORDS if len(pw) >= 4}
        found = [
            (str(path.relative_to(run_dir)), pw)
            for path in files
            for pw, encodings in needles.items()
            if any(needle in path.read_bytes() for needle in encodings)
        ]
        assert found == []
