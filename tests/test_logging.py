"""No secret reaches a log line: ``pta/logging.py``'s ``redact`` and ``configure``."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from pta import logging as pta_logging

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET_VALUE = "hunter2"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Leave structlog unconfigured for the next test, whatever this one configured."""
    yield
    structlog.reset_defaults()


class TestRedact:
    """The processor, called directly as structlog would."""

    @pytest.mark.parametrize(
        "field",
        [
            "password",
            "new_password",
            "old_password",
            "bind_password",
            "token",
            "envelope",
            "private_key",
            "secret",
            "client_secret",
            "refresh_token",
            "sealed_envelope",
            "credentials",
            "Password",
            "BIND_PASSWORD",
        ],
    )
    def test_secret_field_redacted(self, field: str) -> None:
        """A secret-named field's value is replaced, whatever its case."""
        event_dict: dict[str, Any] = {"event": "x", field: SECRET_VALUE}
        out = pta_logging.redact(None, "info", event_dict)
        assert out[field] == pta_logging.REDACTED
        assert SECRET_VALUE not in repr(out)

    @pytest.mark.parametrize(
        "field",
        ["token_id", "request_id", "user", "tenant", "agent_id", "outcome", "event", "domain"],
    )
    def test_other_field_kept(self, field: str) -> None:
        """Fields that are not secrets keep their value."""
        out = pta_logging.redact(None, "info", {field: "visible"})
        assert out[field] == "visible"

    def test_mixed_event(self) -> None:
        """In one event only the secrets change, in place, and every key stays."""
        event_dict: dict[str, Any] = {
            "event": "signin.completed",
            "user": "alice@example.com",
            "request_id": "r1",
            "token_id": "0123456789abcdef",
            "password": SECRET_VALUE,
            "bind_password": "svc-pw",
            "ldap_secret": {"nested": SECRET_VALUE},
        }
        out = pta_logging.redact(None, "info", event_dict)
        assert out is event_dict
        assert out == {
            "event": "signin.completed",
            "user": "alice@example.com",
            "request_id": "r1",
            "token_id": "0123456789abcdef",
            "password": pta_logging.REDACTED,
            "bind_password": pta_logging.REDACTED,
            "ldap_secret": pta_logging.REDACTED,
        }


class TestConfigure:
    """The configured chain, end to end, into a stream."""

    def test_json_line_without_secret(self) -> None:
        """A JSON log line carries the event and fields but never the password."""
        stream = io.StringIO()
        pta_logging.configure(json=True, stream=stream)
        structlog.get_logger().info("signin.completed", password=SECRET_VALUE, user="alice")
        text = stream.getvalue()
        assert SECRET_VALUE not in text
        line = json.loads(text)
        assert line["event"] == "signin.completed"
        assert line["password"] == pta_logging.REDACTED
        assert line["user"] == "alice"
        assert line["level"] == "info"
        assert line["timestamp"].endswith("Z")

    def test_console_without_secret(self) -> None:
        """The readable console output hides the password as well."""
        stream = io.StringIO()
        pta_logging.configure(json=False, stream=stream)
        structlog.get_logger().warning("agent.enrol", token=SECRET_VALUE, token_id="abc")
        text = stream.getvalue()
        assert "agent.enrol" in text
        assert "abc" in text
        assert SECRET_VALUE not in text

    def test_json_chosen_off_terminal(self) -> None:
        """Without an explicit choice, a stream that is not a TTY gets JSON lines."""
        stream = io.StringIO()
        pta_logging.configure(stream=stream)
        structlog.get_logger().info("hello")
        assert json.loads(stream.getvalue())["event"] == "hello"

    @pytest.mark.parametrize(
        ("level", "expected"),
        [("debug", ["d", "i", "w"]), ("info", ["i", "w"]), ("warning", ["w"]), ("error", [])],
        ids=["debug", "info", "warning", "error"],
    )
    def test_level_filters(self, level: str, expected: list[str]) -> None:
        """Events below the configured level are not written."""
        stream = io.StringIO()
        pta_logging.configure(level=level, json=True, stream=stream)
        log = structlog.get_logger()
        log.debug("d")
        log.info("i")
        log.warning("w")
        events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
        assert events == expected
