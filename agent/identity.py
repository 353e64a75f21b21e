"""The agent's state directory: who it is, its keys and certificates, the brokers it knows.

Written once by enrolment, read at every start. Private keys are 0600 and never leave the
directory; ``repr`` of an identity shows no key. Beside them, the cluster's brokers the agent
was last told (:func:`save_brokers`), so that a restarted agent finds them even while the
broker it enrolled with is down or gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pta import sealing, tls

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric import x25519

STATE_FILE = "agent.json"
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.pem"
CA_FILE = "ca.pem"
ENVELOPE_KEY_FILE = "envelope.key"
BROKERS_FILE = "brokers.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentIdentity:
    """Everything an enrolled agent needs to connect."""

    agent_id: str
    tenant: str
    #: The broker's public endpoint, as enrolled with.
    broker: str
    #: Where to dial Connect.
    agent_endpoint: str
    domains: tuple[str, ...]
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    tls_key_pem: bytes = field(repr=False)
    envelope_key: x25519.X25519PrivateKey = field(repr=False)

    def save(self, state_dir: Path) -> None:
        """Write the identity; keys 0600, the directory 0700."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_dir.chmod(0o700)
        tls.write_private(state_dir / TLS_KEY_FILE, self.tls_key_pem)
        tls.write_private(
            state_dir / ENVELOPE_KEY_FILE, sealing.private_key_bytes(self.envelope_key)
        )
        tls.write_public(state_dir / TLS_CERT_FILE, self.cert_pem)
        tls.write_public(state_dir / CA_FILE, self.ca_pem)
        state = {
            "agent_id": self.agent_id,
            "tenant": self.tenant,
            "broker": self.broker,
            "agent_endpoint": self.agent_endpoint,
            "domains": list(self.domains),
        }
        tls.write_public(state_dir / STATE_FILE, json.dumps(state, indent=2).encode())

    @classmethod
    def load(cls, state_dir: Path) -> AgentIdentity:
        """Read an identity written by :meth:`save`.

        Raises:
            FileNotFoundError: When the agent was never enrolled into ``state_dir``.
        """
        path = state_dir / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{state_dir} holds no enrolled agent: run `pta-agent enroll` first"
            )
        state = json.loads(path.read_text())
        return cls(
            agent_id=state["agent_id"],
            tenant=state["tenant"],
            broker=state["broker"],
            agent_endpoint=state["agent_endpoint"],
            domains=tuple(state["domains"]),
            ca_pem=(state_dir / CA_FILE).read_bytes(),
            cert_pem=(state_dir / TLS_CERT_FILE).read_bytes(),
            tls_key_pem=(state_dir / TLS_KEY_FILE).read_bytes(),
            envelope_key=sealing.load_private_key((state_dir / ENVELOPE_KEY_FILE).read_bytes()),
        )


def load_brokers(state_dir: Path) -> tuple[str, ...]:
    """The agent endpoints of the cluster's brokers the agent was last told (none: empty)."""
    path = state_dir / BROKERS_FILE
    if not path.exists():
        return ()
    try:
        brokers = json.loads(path.read_text())["brokers"]
    except (ValueError, KeyError, TypeError):  # Damaged: the seed finds the cluster again.
        return ()
    return tuple(str(b) for b in brokers) if isinstance(brokers, list) else ()


def save_brokers(state_dir: Path, brokers: tuple[str, ...]) -> None:
    """Remember the cluster's brokers, as last told, for the next start."""
    tls.write_public(state_dir / BROKERS_FILE, json.dumps({"brokers": list(brokers)}).encode())
