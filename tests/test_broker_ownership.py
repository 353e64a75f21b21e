"""One broker per port and per data dir: a second one is refused at start, in one line.

Seen before: a second `pta-broker serve` on the same `--listen` started without error (grpc
turns SO_REUSEPORT on by default), both listened, and 3 of 8 sign-ins got "no agent is
connected" from the broker without agents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support import BrokerProcess, one_line, refused_serve
from tooling.slapd import free_port

if TYPE_CHECKING:
    from pathlib import Path


class TestOnePerPort:
    """A taken address refuses the second broker, naming the flag and the address."""

    def test_public_port_taken(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """Another data dir, the running broker's public address: exit 1, says 'in use'."""
        refused = refused_serve(
            tmp_path / "second", "--listen", broker.public, "--agent-listen", "127.0.0.1:0"
        )
        assert refused.returncode == 1
        line = one_line(refused.stderr)
        assert line.startswith("pta-broker: --listen ")
        assert broker.public in line
        assert "in use" in line

    def test_agent_port_taken(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """The agent endpoint's address taken: the same, naming --agent-listen."""
        refused = refused_serve(
            tmp_path / "second", "--listen", "127.0.0.1:0", "--agent-listen", broker.agent
        )
        assert refused.returncode == 1
        assert "--agent-listen" in one_line(refused.stderr)

    def test_sharing_only_when_asked(self, run_dir: Path) -> None:
        """With --reuse-port on both, two brokers listen on one address (for several processes)."""
        port = free_port()
        shared = ("--listen", f"127.0.0.1:{port}", "--agent-listen", "127.0.0.1:0", "--reuse-port")
        first = BrokerProcess.start(run_dir, "broker-reuse-1", *shared)
        try:
            second = BrokerProcess.start(run_dir, "broker-reuse-2", *shared)
            second.stop()
        finally:
            first.stop()


class TestOnePerDataDir:
    """A data dir already served refuses a second broker, whatever its ports."""

    def test_data_dir_served(self, broker: BrokerProcess) -> None:
        """Free ports, the running broker's data dir: exit 1, names the other broker's pid."""
        refused = refused_serve(
            broker.data_dir, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"
        )
        assert refused.returncode == 1
        line = one_line(refused.stderr)
        assert f"pid {broker.process.pid}" in line
        assert str(broker.data_dir) in line
        assert broker.process.poll() is None, "the serving broker is untouched"
