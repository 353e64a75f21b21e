"""The broker's configuration: one frozen value, validated once, built from flags and env."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from broker.policy.mfa import DEFAULT_CHALLENGE_TTL
from broker.policy.signing import DEFAULT_ISSUER, DEFAULT_KEY_LIFETIME, DEFAULT_TOKEN_TTL
from broker.store.location import check_url, redact
from pta.config import parse_duration, parse_endpoint

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_LISTEN = "127.0.0.1:7443"
DEFAULT_SIGNIN_TIMEOUT = 10.0
DEFAULT_AGENT_CERT_LIFETIME = datetime.timedelta(hours=24)
DEFAULT_SERVER_CERT_LIFETIME = datetime.timedelta(days=90)
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_QUEUE_LIMIT = 1024
DEFAULT_STREAMS_PER_ADDRESS = 32
DEFAULT_STREAM_IDLE = 300.0
MIN_STREAM_IDLE = 1.0
DEFAULT_GRACE = 5.0
ENV_PREFIX = "PTA_BROKER_"
#: The shared store's URL, for ``serve`` and every management command alike (and for the
#: tooling that starts brokers): one name for one cluster, so not under ``PTA_BROKER_``.
STORE_ENV = "PTA_STORE"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Everything ``pta-broker serve`` needs; live objects are built from it at start."""

    data_dir: Path
    #: ``postgresql://…``: the store this broker shares with the others of its cluster; empty,
    #: an SQLite store in ``data_dir``. It may hold a password: never shown (see ``where``).
    store: str = field(default="", repr=False)
    #: Public endpoint: sign-ins, enrolment, health, reflection (server-authenticated TLS).
    listen: str = DEFAULT_LISTEN
    #: Agent endpoint: Connect, mutual TLS required. Default: the public port + 1.
    agent_listen: str = ""
    #: Where agents should dial Connect, if not the host they enrolled with (behind a proxy).
    agent_endpoint: str = ""
    san: tuple[str, ...] = ()
    signin_timeout: float = DEFAULT_SIGNIN_TIMEOUT
    agent_cert_lifetime: datetime.timedelta = DEFAULT_AGENT_CERT_LIFETIME
    server_cert_lifetime: datetime.timedelta = DEFAULT_SERVER_CERT_LIFETIME
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    #: Sign-ins a second per client address (0: no limit), and the burst allowed.
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    #: Front ends (CIDRs) whose requests' ``client_ip`` the rate limit believes.
    trusted_proxies: tuple[str, ...] = ()
    #: SignInStreams one address may hold open, and how long one may idle (nothing in flight).
    streams_per_address: int = DEFAULT_STREAMS_PER_ADDRESS
    stream_idle_timeout: float = DEFAULT_STREAM_IDLE
    grace: float = DEFAULT_GRACE
    #: Let several broker processes listen on one address (SO_REUSEPORT); off, a taken
    #: address refuses to start.
    reuse_port: bool = False
    #: ``host:port`` serving Prometheus metrics at ``/metrics`` (empty: none, the default).
    metrics_listen: str = ""
    #: Tokens of successful sign-ins: their ``iss``, optional ``aud``, and lifetimes.
    token_issuer: str = DEFAULT_ISSUER
    token_audience: str = ""
    token_ttl: float = DEFAULT_TOKEN_TTL
    signing_key_lifetime: float = DEFAULT_KEY_LIFETIME
    #: The key that seals TOTP secrets: a file (0600), or the key itself from the environment.
    mfa_key_file: Path | None = None
    mfa_key: str = field(default="", repr=False)
    #: How long a right password waits for its second factor.
    mfa_challenge_ttl: float = DEFAULT_CHALLENGE_TTL

    def __post_init__(self) -> None:
        """Refuse values that would make the broker misbehave later rather than now.

        Raises:
            ValueError: On an invalid endpoint, timeout or limit.
        """
        if self.store:
            check_url(self.store)
        self._check_endpoints()
        if self.signin_timeout <= 0 or self.heartbeat_interval <= 0 or self.grace < 0:
            raise ValueError("timeouts must be positive")
        for network in self.trusted_proxies:
            ipaddress.ip_network(network)  # ValueError on a bad CIDR
        if self.queue_limit < 1:
            raise ValueError("queue limit must be at least 1")
        if self.streams_per_address < 1:
            raise ValueError("streams per address must be positive")
        if self.stream_idle_timeout < MIN_STREAM_IDLE:
            # Below a second the watchdog would wake over and over while items are in flight.
            raise ValueError(f"the stream idle timeout must be at least {MIN_STREAM_IDLE:g} s")
        if self.mfa_challenge_ttl <= 0:
            raise ValueError("the MFA challenge lifetime must be positive")
        if not 0 < self.token_ttl <= self.signing_key_lifetime:
            raise ValueError("the token lifetime must be positive and at most the key lifetime")

    def _check_endpoints(self) -> None:
        """Every address must be ``host:port``; the agent endpoint's default is set here."""
        parse_endpoint(self.listen)
        if self.metrics_listen:
            parse_endpoint(self.metrics_listen)
        if self.agent_listen:
            parse_endpoint(self.agent_listen)
        else:
            host, port = parse_endpoint(self.listen)
            object.__setattr__(self, "agent_listen", f"{host}:{port + 1 if port else 0}")

    @property
    def store_shown(self) -> str:
        """Where the store is, as logs and messages may say it (no password)."""
        return redact(self.store) if self.store else str(self.data_dir)


def load_config(options: Mapping[str, object], environ: Mapping[str, str]) -> BrokerConfig:
    """Build the configuration from parsed flags, falling back to ``PTA_BROKER_*`` variables.

    Args:
        options: Flag values by name; None means not given.
        environ: The process environment.

    Returns:
        The validated configuration.
    """

    def pick(name: str) -> str | None:
        value = options.get(name)
        if value is not None:
            return str(value)
        return environ.get(ENV_PREFIX + name.upper())

    data_dir = pick("data_dir")
    if not data_dir:
        raise ValueError("--data-dir (or PTA_BROKER_DATA_DIR) is required")
    given = options.get("san")
    sans = (
        [str(s) for s in given]
        if isinstance(given, list | tuple)
        else [s for s in environ.get(ENV_PREFIX + "SAN", "").split(",") if s]
    )

    def lifetime(name: str, default: datetime.timedelta) -> datetime.timedelta:
        text = pick(name)
        return datetime.timedelta(seconds=parse_duration(text)) if text else default

    return BrokerConfig(
        data_dir=Path(data_dir),
        store=store_url(options, environ),
        listen=pick("listen") or DEFAULT_LISTEN,
        agent_listen=pick("agent_listen") or "",
        agent_endpoint=pick("agent_endpoint") or "",
        san=tuple(sans),
        signin_timeout=parse_duration(pick("signin_timeout") or str(DEFAULT_SIGNIN_TIMEOUT)),
        agent_cert_lifetime=lifetime("agent_cert_lifetime", DEFAULT_AGENT_CERT_LIFETIME),
        server_cert_lifetime=lifetime("server_cert_lifetime", DEFAULT_SERVER_CERT_LIFETIME),
        heartbeat_interval=parse_duration(
            pick("heartbeat_interval") or str(DEFAULT_HEARTBEAT_INTERVAL)
        ),
        queue_limit=int(pick("queue_limit") or DEFAULT_QUEUE_LIMIT),
        rate_limit=float(pick("rate_limit") or 0),
        rate_burst=float(pick("rate_burst") or 0),
        trusted_proxies=_list(options.get("trusted_proxy")),
        streams_per_address=int(pick("streams_per_address") or DEFAULT_STREAMS_PER_ADDRESS),
        stream_idle_timeout=parse_duration(pick("stream_idle_timeout") or str(DEFAULT_STREAM_IDLE)),
        grace=float(pick("grace") or DEFAULT_GRACE),
        reuse_port=(pick("reuse_port") or "").lower() in ("1", "true", "yes"),
        metrics_listen=pick("metrics_listen") or "",
        token_issuer=pick("token_issuer") or DEFAULT_ISSUER,
        token_audience=pick("token_audience") or "",
        token_ttl=parse_duration(pick("token_ttl") or str(DEFAULT_TOKEN_TTL)),
        signing_key_lifetime=parse_duration(
            pick("signing_key_lifetime") or str(DEFAULT_KEY_LIFETIME)
        ),
        mfa_key_file=mfa_key_file(options, environ),
        mfa_key=environ.get(ENV_PREFIX + "MFA_KEY", ""),
        mfa_challenge_ttl=parse_duration(pick("mfa_challenge_ttl") or str(DEFAULT_CHALLENGE_TTL)),
    )


def store_url(options: Mapping[str, object], environ: Mapping[str, str]) -> str:
    """The shared store's URL, by ``--store`` or ``PTA_STORE`` (empty: SQLite in the data dir).

    Raises:
        ValueError: When it is not a PostgreSQL URL (said without repeating it).
    """
    url = str(options.get("store") or environ.get(STORE_ENV, ""))
    return check_url(url) if url else ""


def mfa_key_file(options: Mapping[str, object], environ: Mapping[str, str]) -> Path | None:
    """Where the MFA key is, by ``--mfa-key-file`` or ``PTA_BROKER_MFA_KEY_FILE``."""
    name = options.get("mfa_key_file") or environ.get(ENV_PREFIX + "MFA_KEY_FILE")
    return Path(str(name)) if name else None


def _list(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()
