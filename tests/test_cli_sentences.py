"""The command line speaks in sentences: a user's mistake is one line and a documented code.

Each case was seen as a 26-36-line traceback (or a silent wrong guess) by someone following the
README; every one runs the real console script against real processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import DOMAIN, USERS
from tests.secrets_registry import secret
from tests.support import BIN, BrokerProcess, enrol_cli, signin_cli

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import AgentProcess


def _one_line(stderr: str, prefix: str) -> str:
    """The message: one line (besides log lines), no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr
    return lines[0]


class TestEnrolSentences:
    """`pta-agent enroll` against the wrong place, or with a spent token: exit 1, one line."""

    @pytest.mark.parametrize(
        ("endpoint", "says"),
        [
            ("127.0.0.1:1", "nothing listens at 127.0.0.1:1"),
            ("no-such-host.invalid:7443", "cannot find the broker's host"),
            ("127.0.0.1", "not a host:port endpoint"),
        ],
        ids=["closed-port", "unknown-host", "no-port"],
    )
    def test_unreachable(
        self, broker: BrokerProcess, tmp_path: Path, endpoint: str, says: str
    ) -> None:
        """Closed port, unknown host, no port: the sentence names the problem."""
        token = broker.token("acme")
        result = subprocess.run(
            [
                str(BIN / "pta-agent"),
                "enroll",
                "--broker",
                endpoint,
                "--token",
                token,
                "--state-dir",
                str(tmp_path / "s"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert says in _one_line(result.stderr, "pta-agent: ")

    def test_agent_endpoint_instead_of_public(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """Dialling the agent endpoint: told that it is the agent endpoint, and where to go."""
        result = subprocess.run(
            [
                str(BIN / "pta-agent"),
                "enroll",
                "--broker",
                broker.agent,
                "--token",
                broker.token("acme"),
                "--state-dir",
                str(tmp_path / "s"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        line = _one_line(result.stderr, "pta-agent: ")
        assert "agent endpoint" in line
        assert "public endpoint" in line

    def test_used_token(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """A spent token: the broker's sentence and what to do, no traceback."""
        token = broker.token("acme")
        assert enrol_cli(broker, token, tmp_path / "first").returncode == 0
        again = enrol_cli(broker, token, tmp_path / "second")
        assert again.returncode == 1
        line = _one_line(again.stderr, "pta-agent: ")
        assert "unknown, used or expired" in line
        assert "pta-broker token create" in line


class TestSignInSentences:
    """`pta-signin`'s own mistakes: exit 2 (usage) or the status's code, one line."""

    def test_missing_ca_file(self, broker: BrokerProcess) -> None:
        """A CA file that is not there: exit 2, names the file."""
        result = subprocess.run(
            [
                str(BIN / "pta-signin"),
                "--broker",
                broker.public,
                "--ca-file",
                "/nonexistent/ca.pem",
                "--password-stdin",
                f"alice@{DOMAIN}",
            ],
            input=secret("x") + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert "/nonexistent/ca.pem" in _one_line(result.stderr, "pta-signin: ")

    def test_endpoint_without_port(self, broker: BrokerProcess) -> None:
        """No port: refused (it dialled :443 silently before)."""
        host = broker.public.rpartition(":")[0]
        result = subprocess.run(
            [
                str(BIN / "pta-signin"),
                "--broker",
                host,
                "--ca-file",
                str(broker.ca_file),
                "--password-stdin",
                f"alice@{DOMAIN}",
            ],
            input=secret("x") + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert "host:port" in _one_line(result.stderr, "pta-signin: ")

    def test_agent_endpoint_instead_of_public(self, broker: BrokerProcess) -> None:
        """The agent endpoint: UNAVAILABLE (20), with the hint where to dial instead."""
        agent_side = BrokerProcess(
            data_dir=broker.data_dir,
            log_path=broker.log_path,
            process=broker.process,
            public=broker.agent,
            ca_file=broker.ca_file,
        )
        result = signin_cli(agent_side, f"alice@{DOMAIN}", secret("x") + "\n")
        assert result.returncode == 20
        assert "agent endpoint" in _one_line(result.stderr, "pta-signin: ")

    def test_end_of_input_at_the_prompt(self, broker: BrokerProcess) -> None:
        """Ctrl-D at the password prompt: 'no password given', exit 2."""
        result = subprocess.run(
            [
                str(BIN / "pta-signin"),
                "--broker",
                broker.public,
                "--ca-file",
                str(broker.ca_file),
                f"alice@{DOMAIN}",
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert "no password given" in _one_line(result.stderr, "pta-signin: ")

    @pytest.mark.parametrize(
        ("flags", "asks"),
        [((), "Password for"), (("--change-password",), "Current password for")],
        ids=["sign-in", "change-password"],
    )
    def test_interrupt_at_the_prompt(
        self, broker: BrokerProcess, flags: tuple[str, ...], asks: str
    ) -> None:
        """Ctrl-C at the prompt (a change asks for the *current* password): exit 130."""
        process = subprocess.Popen(
            [
                str(BIN / "pta-signin"),
                "--broker",
                broker.public,
                "--ca-file",
                str(broker.ca_file),
                *flags,
                f"alice@{DOMAIN}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            prompt = f"{asks} alice@{DOMAIN}: "
            seen = ""
            while not seen.endswith(prompt):  # getpass prompts on stderr, then reads stdin.
                char = process.stderr.read(1)
                assert char, seen
                seen += char
            process.send_signal(signal.SIGINT)
            _, rest = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130
        assert "interrupted" in _one_line(rest, "pta-signin: ")

    @pytest.mark.usefixtures("agent")
    def test_json_uses_the_contracts_names(
        self, broker: BrokerProcess, agent: AgentProcess
    ) -> None:
        """--json: snake_case names as the contract has them, 64-bit numbers as numbers."""
        del agent
        result = signin_cli(broker, f"bob@{DOMAIN}", USERS["bob"] + "\n", "--json")
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        assert set(reply) == {
            "outcome",
            "request_id",
            "message",
            "token",
            "token_expires_at",
            "mfa_challenge_id",
            "mfa_expires_in_seconds",
            "retry_after_seconds",
        }
        assert reply["outcome"] == "SUCCESS"
        assert isinstance(reply["token_expires_at"], int)
        assert reply["token_expires_at"] > time.time()


class TestTokenDelete:
    """`pta-broker token delete` never prints a token's secret."""

    def test_whole_token_is_deleted_by_its_id_and_never_echoed(self, broker: BrokerProcess) -> None:
        """Given the whole token by mistake: deleted by its id; the secret appears nowhere."""
        token = broker.token("acme")
        token_id, secret = token.split(".")[1:3]
        deleted = broker.cli("token", "delete", token, check=False)
        assert deleted.returncode == 0, deleted.stderr
        assert secret not in deleted.stdout + deleted.stderr
        assert token_id in deleted.stdout
        again = broker.cli("token", "delete", token, check=False)
        assert again.returncode == 1
        assert secret not in again.stdout + again.stderr
        garbage = broker.cli("token", "delete", "pta1.x." + secret, check=False)
        assert garbage.returncode == 1
        assert secret not in garbage.stdout + garbage.stderr
