"""The agent's state directory (``agent/identity.py``): the brokers it remembers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.identity import BROKERS_FILE, load_brokers, save_brokers

if TYPE_CHECKING:
    from pathlib import Path


class TestBrokers:
    """The cluster's brokers, as last told, kept for the next start."""

    def test_kept_and_read_back(self, tmp_path: Path) -> None:
        """What was saved is what the next start reads."""
        save_brokers(tmp_path, ("a:1", "b:1"))
        assert load_brokers(tmp_path) == ("a:1", "b:1")

    @pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"brokers": "a:1"}'], ids=str)
    def test_missing_or_damaged_is_none(self, tmp_path: Path, content: str) -> None:
        """Nothing usable: none (the seed finds the cluster again)."""
        assert load_brokers(tmp_path) == ()
        (tmp_path / BROKERS_FILE).write_text(content)
        assert load_brokers(tmp_path) == ()
