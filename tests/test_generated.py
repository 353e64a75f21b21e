"""The committed generated code is what ``make proto`` makes from ``proto/`` today."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tooling import protogen

if TYPE_CHECKING:
    from pathlib import Path


class TestGeneratedCode:
    """Stale generated code fails the suite rather than a user's call."""

    def test_committed_code_is_current(self, tmp_path: Path) -> None:
        """Every generated file equals a fresh run of the pinned protoc, and none is extra."""
        fresh = {p.name: p.read_bytes() for p in protogen.generate(tmp_path)}
        committed = {p.name: p.read_bytes() for p in protogen.OUT_DIR.iterdir() if p.name in fresh}
        stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
        assert not stale, f"run `make proto`: stale {stale}"
        generated = {p.name for p in protogen.OUT_DIR.glob("*_pb2*") if p.suffix in {".py", ".pyi"}}
        assert generated == set(fresh), "generated files without a .proto: delete them"
