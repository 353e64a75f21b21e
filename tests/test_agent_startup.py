"""The agent checks its configuration when it starts, against the directory itself.

Each mistake below used to start an agent that answered every sign-in UNAVAILABLE or "no such
user". Now each is one line naming the setting, and exit code 78 (EX_CONFIG); a directory that
is merely unreachable still starts the agent, with a warning.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.secrets_registry import known, secret
from tests.support import BIN, AgentProcess, BrokerProcess, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from tooling.slapd import Slapd

CONFIGURATION_ERROR = 78


@pytest.fixture
def state(broker: BrokerProcess, tmp_path: Path) -> Path:
    """An agent of acme, enrolled, not running."""
    AgentProcess.enrol(broker, "acme", tmp_path / "state")
    return tmp_path / "state"


def _run(state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`pta-agent run` that is expected to refuse to start (and so to exit by itself)."""
    return subprocess.run(
        [
            str(BIN / "pta-agent"),
            "--log-level",
            "warning",
            "run",
            "--state-dir",
            str(state),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one line it said, after checking it exited 78 without a traceback."""
    assert done.returncode == CONFIGURATION_ERROR, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("pta-agent: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "bind.pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


class TestRefusedAtStart:
    """Wrong settings the directory reveals: exit 78, one line naming the setting."""

    def test_wrong_service_password(self, state: Path, slapd: Slapd, tmp_path: Path) -> None:
        """The service account's password is wrong: names bind_password_file."""
        wrong = _password_file(tmp_path, secret("Service-wrong"))
        line = _refusal(
            _run(state, "--ldap-url", slapd.url, "--base-dn", slapd.base_dn,
                 "--bind-dn", slapd.admin_dn, "--bind-password-file", str(wrong))
        )  # fmt: skip
        assert "bind_password_file (--bind-password-file)" in line
        assert "refused the service account" in line
        assert "space" not in line

    def test_service_password_with_a_trailing_space(
        self, state: Path, slapd: Slapd, tmp_path: Path
    ) -> None:
        """The right password and a space: says the space is the problem, not the password."""
        spaced = _password_file(tmp_path, known(slapd.admin_password) + " ")
        line = _refusal(
            _run(state, "--ldap-url", slapd.url, "--base-dn", slapd.base_dn,
                 "--bind-dn", slapd.admin_dn, "--bind-password-file", str(spaced))
        )  # fmt: skip
        assert "begins or ends with a space" in line
        assert slapd.admin_password not in line

    def test_base_dn_that_does_not_exist(self, state: Path, slapd: Slapd) -> None:
        """A base DN with a typo: names base_dn and says it does not exist."""
        typo = slapd.base_dn.replace("example", "exmaple")
        line = _refusal(_run(state, "--ldap-url", slapd.url, "--base-dn", typo))
        assert "base_dn (--base-dn)" in line
        assert f"{typo!r} does not exist" in line

    def test_login_attribute_the_schema_lacks(self, state: Path, slapd: Slapd) -> None:
        """A misspelt login attribute: names login_attribute."""
        line = _refusal(
            _run(state, "--ldap-url", slapd.url, "--base-dn", slapd.base_dn,
                 "--login-attribute", "uidd")
        )  # fmt: skip
        assert "login_attribute (--login-attribute)" in line
        assert "no attribute 'uidd'" in line


class TestRefusedBeforeDialling:
    """Mistakes in the configuration itself: refused before any directory is asked."""

    def test_unknown_key_in_the_config_file(
        self, state: Path, slapd: Slapd, tmp_path: Path
    ) -> None:
        """A misspelt key in [[directory]]: named, with the key it was meant to be."""
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[[directory]]\nldap_url = "{slapd.url}"\nbase_dn = "{slapd.base_dn}"\n'
            'login_atribute = "mail"\n'
        )
        line = _refusal(_run(state, "--config", str(config)))
        assert "unknown key 'login_atribute' in [[directory]] 1" in line
        assert "did you mean 'login_attribute'?" in line

    def test_ca_file_without_tls(self, state: Path, slapd: Slapd, tmp_path: Path) -> None:
        """A CA file for a plain ldap:// URL without StartTLS would be silently unused."""
        ca = tmp_path / "ca.pem"
        ca.write_text("unused")
        line = _refusal(
            _run(state, "--ldap-url", slapd.url, "--base-dn", slapd.base_dn, "--ca-file", str(ca))
        )
        assert "ca_file (--ca-file)" in line
        assert "no connection uses TLS" in line


class TestUnreachableStillStarts:
    """A directory that does not answer is not a configuration error."""

    def test_closed_port_starts_and_warns(
        self, broker: BrokerProcess, state: Path, slapd: Slapd, tmp_path: Path
    ) -> None:
        """Nothing listens at the URL: the agent connects to the broker and says so."""
        agent_id = json.loads((state / "agent.json").read_text())["agent_id"]
        log_path = tmp_path / "agent.log"
        process = AgentProcess.launch(
            state, None, log_path, "--ldap-url", "ldap://127.0.0.1:1", "--base-dn", slapd.base_dn
        )
        agent = AgentProcess(state_dir=state, log_path=log_path, process=process, agent_id=agent_id)
        try:
            wait_for(
                lambda: any(
                    e.get("agent_id") == agent_id for e in broker.log_events("agent.connected")
                ),
                what="the agent to connect although its directory is down",
            )
            assert "directory.unreachable_at_start" in log_path.read_text()
            assert process.poll() is None
        finally:
            agent.stop()
