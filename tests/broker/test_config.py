"""``broker/config.py``: the SignInStream bounds, from flags, the environment, or defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker.config import DEFAULT_STREAM_IDLE, DEFAULT_STREAMS_PER_ADDRESS, load_config

if TYPE_CHECKING:
    from pathlib import Path


class TestStreamBounds:
    """``--streams-per-address`` and ``--stream-idle-timeout`` (``PTA_BROKER_*`` likewise)."""

    def test_defaults(self, tmp_path: Path) -> None:
        """32 streams per address, idle for 5 minutes."""
        config = load_config({"data_dir": str(tmp_path)}, {})
        assert (config.streams_per_address, config.stream_idle_timeout) == (32, 300.0)
        assert (DEFAULT_STREAMS_PER_ADDRESS, DEFAULT_STREAM_IDLE) == (32, 300.0)

    def test_flags_then_environment(self, tmp_path: Path) -> None:
        """A flag wins over the environment; durations take units."""
        environ = {
            "PTA_BROKER_STREAMS_PER_ADDRESS": "4",
            "PTA_BROKER_STREAM_IDLE_TIMEOUT": "2m",
        }
        by_environment = load_config({"data_dir": str(tmp_path)}, environ)
        assert (by_environment.streams_per_address, by_environment.stream_idle_timeout) == (
            4,
            120.0,
        )
        by_flag = load_config(
            {"data_dir": str(tmp_path), "streams_per_address": "8", "stream_idle_timeout": "30s"},
            environ,
        )
        assert (by_flag.streams_per_address, by_flag.stream_idle_timeout) == (8, 30.0)

    @pytest.mark.parametrize(
        ("options", "reason"),
        [
            ({"streams_per_address": "0"}, "must be positive"),
            ({"stream_idle_timeout": "0s"}, "must be positive"),
            ({"stream_idle_timeout": "500ms"}, "at least 1 s"),
        ],
        ids=["no-streams", "no-idle-time", "sub-second"],
    )
    def test_refused(self, tmp_path: Path, options: dict[str, str], reason: str) -> None:
        """A bound that would refuse every stream, or keep its watchdog spinning, is a mistake."""
        with pytest.raises(ValueError, match=reason):
            load_config({"data_dir": str(tmp_path), **options}, {})


class TestStore:
    """``--store`` (or ``PTA_STORE``): the PostgreSQL store of a cluster; SQLite without it."""

    def test_flag_then_environment_then_sqlite(self, tmp_path: Path) -> None:
        """A flag wins over ``PTA_STORE``; neither: the data dir's SQLite store."""
        environ = {"PTA_STORE": "postgresql://pta@db:5432/from_env"}
        assert load_config({"data_dir": str(tmp_path)}, {}).store == ""
        assert load_config({"data_dir": str(tmp_path)}, {}).store_shown == str(tmp_path)
        assert load_config({"data_dir": str(tmp_path)}, environ).store.endswith("/from_env")
        by_flag = load_config(
            {"data_dir": str(tmp_path), "store": "postgres://pta@db/from_flag"}, environ
        )
        assert by_flag.store == "postgres://pta@db/from_flag"

    def test_not_a_url_is_refused_without_repeating_it(self, tmp_path: Path) -> None:
        """A conninfo string (or a typo) is refused; the message does not echo what was given."""
        given = "host=db user=pta password=hunter2-xyz"
        with pytest.raises(ValueError, match="takes a postgresql://") as refused:
            load_config({"data_dir": str(tmp_path), "store": given}, {})
        assert "hunter2-xyz" not in str(refused.value)
