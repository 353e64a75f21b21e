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
