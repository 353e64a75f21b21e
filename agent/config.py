"""The agent's configuration: its state directory and the directories it checks passwords in.

Built from flags, ``PTA_AGENT_*`` variables or a TOML file with the same keys; this module is
the only code that reads them. Secrets (the service account's password) are read from a file
and hidden from ``repr``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pta.config import parse_endpoint
from pta.names import normalize_domain, parse_upn
from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ENV_PREFIX = "PTA_AGENT_"
DEFAULT_LOGIN_ATTRIBUTE = "uid"
AD_LOGIN_ATTRIBUTE = "userPrincipalName"
KINDS = frozenset({"openldap", "ad"})
DEFAULT_MAX_IN_FLIGHT = 32
DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_RECEIVE_TIMEOUT = 5.0
DEFAULT_DN_CACHE_TTL = 300.0
DEFAULT_DN_CACHE_SIZE = 10_000
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
#: Longest directory identity the broker takes (see ``DirectoryAccounts.directory_id``).
MAX_DIRECTORY_ID = 512
#: Characters a directory identity must not hold: RFC 4514 lets a DN hex-escape any of them.
_UNSAFE_IN_ID = re.compile(r"[\x00-\x1f\x7f\[\]]")
#: Login attributes whose value is the whole UPN; for the others it is the part before ``@``.
FULL_NAME_ATTRIBUTES = frozenset({"userprincipalname", "mail"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryConfig:
    """One directory (a domain's LDAP servers) and how users are found in it."""

    urls: tuple[str, ...]
    base_dn: str
    #: ``openldap`` or ``ad`` (Active Directory: users sign in by userPrincipalName, a service
    #: account searches, and the connection must be TLS, verified against ``ca_file``).
    kind: str = "openldap"
    #: UPN suffixes this directory answers for; empty means every domain of the tenant.
    domains: tuple[str, ...] = ()
    bind_dn: str = ""
    bind_password: str = field(default="", repr=False)
    login_attribute: str = DEFAULT_LOGIN_ATTRIBUTE
    #: OpenLDAP only: the ppolicy entry whose lockout threshold the broker is told about;
    #: empty means the lowest of every ``pwdPolicy`` entry found under ``base_dn``.
    password_policy_dn: str = ""
    ca_file: Path | None = None
    #: Upgrade ldap:// connections with StartTLS (verified against ``ca_file``).
    start_tls: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE
    #: How long a login name's DN is remembered, and how many are (0 turns the cache off).
    dn_cache_ttl: float = DEFAULT_DN_CACHE_TTL
    dn_cache_size: int = DEFAULT_DN_CACHE_SIZE

    def __post_init__(self) -> None:
        """Refuse a directory that could never work.

        Raises:
            ValueError: On missing URLs or base DN, or a non-positive timeout or pool.
        """
        if not self.urls or not all(u.startswith(("ldap://", "ldaps://")) for u in self.urls):
            raise ValueError("a directory needs ldap:// or ldaps:// URLs")
        if not self.base_dn:
            raise ValueError("a directory needs a base DN")
        if bool(self.bind_dn) != bool(self.bind_password):
            raise ValueError("a service account needs both a bind DN and a password")
        if self.connect_timeout <= 0 or self.receive_timeout <= 0 or self.pool_size < 1:
            raise ValueError("timeouts and the pool size must be positive")
        if self.kind not in KINDS:
            raise ValueError(f"directory kind is one of {sorted(KINDS)}, not {self.kind!r}")
        if self.kind == "ad":
            self._check_ad()
        self._check_tls()
        if self.password_policy_dn and self.kind == "ad":
            raise ValueError(
                "password_policy_dn is for OpenLDAP: AD's threshold is read from the domain"
            )
        if not _ATTRIBUTE.match(self.login_attribute):
            raise ValueError(f"not an LDAP attribute name: {self.login_attribute!r}")
        object.__setattr__(self, "domains", tuple(normalize_domain(d) for d in self.domains))

    def _check_tls(self) -> None:
        if self.start_tls and self.ca_file is None:
            raise ValueError("StartTLS needs a ca_file to verify the directory by")
        tls = self.start_tls or any(u.startswith("ldaps://") for u in self.urls)
        if self.ca_file is not None and not tls:
            raise ValueError(
                "ca_file (--ca-file) is given but no connection uses TLS: use ldaps:// URLs or "
                "start_tls (--start-tls), or drop ca_file"
            )

    def _check_ad(self) -> None:
        # Samba and Windows refuse simple binds in clear text by default, and rightly so.
        tls = self.start_tls or all(u.startswith("ldaps://") for u in self.urls)
        if not tls or self.ca_file is None:
            raise ValueError("Active Directory needs ldaps:// (or StartTLS) and a ca_file")
        if not self.bind_dn:
            raise ValueError("Active Directory needs a service account (bind_dn) to search")

    @property
    def full_name_login(self) -> bool:
        """Whether the login value is the whole ``user@domain`` (else the part before ``@``)."""
        return self.login_attribute.lower() in FULL_NAME_ATTRIBUTES

    @property
    def directory_id(self) -> str:
        """The directory's identity for the broker: the base DN, normalised.

        Two agents configured for one directory must report the same identity (the broker
        then counts one account once, whichever agent checks it), whatever case or spacing
        their configurations use; so it is the base DN lower-cased, without spaces around the
        separators between RDNs and their parts, with ``[``, ``]`` and control characters
        hex-escaped as RFC 4514 allows.
        """
        return _UNSAFE_IN_ID.sub(
            lambda match: f"\\{ord(match.group()):02x}", normalize_dn(self.base_dn)
        )[:MAX_DIRECTORY_ID]

    @property
    def settings_digest(self) -> bytes:
        """SHA-256 of every setting that decides this directory's answers, never a secret.

        The broker forgets what it remembers of refused passwords when an agent comes back
        with other settings: a broken configuration's answers must not outlive it.
        """
        settings = [
            list(self.urls),
            self.base_dn,
            self.kind,
            self.login_attribute,
            self.bind_dn,
            self.start_tls,
            str(self.ca_file or ""),
            self.password_policy_dn,
            list(self.domains),
        ]
        return hashlib.sha256(json.dumps(settings).encode()).digest()

    def login_value(self, username: str) -> str:
        """Return what to search the login attribute for, given ``user@domain``."""
        upn = parse_upn(username)  # The domain lower-cased and without a trailing dot.
        if self.full_name_login:
            return str(upn)
        return upn.local


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything ``pta-agent run`` needs."""

    state_dir: Path
    directories: tuple[DirectoryConfig, ...]
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: ``host:port`` serving Prometheus metrics at ``/metrics`` (empty: none, the default).
    metrics_listen: str = ""

    def __post_init__(self) -> None:
        """Refuse a configuration without a directory.

        Raises:
            ValueError: When no directory is configured or the limit is not positive.
        """
        if not self.directories:
            raise ValueError("configure at least one directory (--ldap-url and --base-dn)")
        if self.max_in_flight < 1:
            raise ValueError("max in flight must be at least 1")
        if self.metrics_listen:
            parse_endpoint(self.metrics_listen)

    def directory_for(self, domain: str) -> DirectoryConfig | None:
        """Return the directory that answers for ``domain``: a specific one first."""
        for directory in self.directories:
            if domain in directory.domains:
                return directory
        return next((d for d in self.directories if not d.domains), None)

    def hello_directories(self) -> list[agent_pb2.DirectoryAccounts]:
        """How each directory maps typed names to accounts, as the hello tells the broker.

        In the order of :meth:`directory_for`'s choice, so that the broker, choosing as it
        does, picks the directory this agent sends each domain's sign-ins to.
        """
        scopes = agent_pb2.LoginScope
        return [
            agent_pb2.DirectoryAccounts(
                domains=list(d.domains),
                directory_id=d.directory_id,
                login_scope=(
                    scopes.LOGIN_SCOPE_FULL_NAME
                    if d.full_name_login
                    else scopes.LOGIN_SCOPE_LOCAL_PART
                ),
                settings_digest=d.settings_digest,
            )
            for d in self.directories
        ]


def normalize_dn(dn: str) -> str:
    r"""Lower-case a DN and drop the spaces around its separators (``,`` ``=`` ``+``).

    Escaped characters (``\,``, ``\ ``) are kept as they are: they belong to a value.
    """
    out: list[str] = []
    kept = 0  # Characters of ``out`` that trailing-space stripping must not remove.
    chars = iter(dn.strip())
    skip_spaces = False
    for char in chars:
        if char == "\\":
            out += [char, next(chars, "")]
            kept = len(out)
            skip_spaces = False
        elif char in ",=+":
            while len(out) > kept and out[-1] == " ":
                out.pop()
            out.append(char)
            kept = len(out)
            skip_spaces = True
        elif char == " " and skip_spaces:
            continue
        else:
            out.append(char)
            skip_spaces = False
    return "".join(out).lower()


def _directory(values: Mapping[str, Any]) -> DirectoryConfig:
    password = ""
    if path := values.get("bind_password_file"):
        password = Path(path).read_text().rstrip("\r\n")
    urls = values.get("ldap_url") or values.get("urls") or ()
    kind = str(values.get("kind") or "openldap")
    default_login = AD_LOGIN_ATTRIBUTE if kind == "ad" else DEFAULT_LOGIN_ATTRIBUTE
    return DirectoryConfig(
        urls=tuple([urls] if isinstance(urls, str) else urls),
        base_dn=str(values.get("base_dn") or ""),
        kind=kind,
        start_tls=bool(values.get("start_tls")),
        domains=tuple(values.get("domains") or ()),
        bind_dn=str(values.get("bind_dn") or ""),
        bind_password=password,
        login_attribute=str(values.get("login_attribute") or default_login),
        password_policy_dn=str(values.get("password_policy_dn") or ""),
        ca_file=Path(values["ca_file"]) if values.get("ca_file") else None,
        connect_timeout=float(values.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
        receive_timeout=float(values.get("receive_timeout") or DEFAULT_RECEIVE_TIMEOUT),
        pool_size=int(values.get("pool_size") or DEFAULT_POOL_SIZE),
    )


#: The keys a config file may set at its top level (and the flags' names): one directory.
FILE_KEYS = (
    "state_dir",
    "metrics_listen",
    "ldap_url",
    "base_dn",
    "bind_dn",
    "bind_password_file",
    "login_attribute",
    "password_policy_dn",
    "ca_file",
    "kind",
    "start_tls",
    "max_in_flight",
    "pool_size",
)
#: The keys a ``[[directory]]`` table may set.
DIRECTORY_KEYS = (
    "ldap_url",
    "urls",
    "base_dn",
    "kind",
    "start_tls",
    "domains",
    "bind_dn",
    "bind_password_file",
    "login_attribute",
    "password_policy_dn",
    "ca_file",
    "connect_timeout",
    "receive_timeout",
    "pool_size",
)


def _check_keys(values: Mapping[str, Any], path: str) -> None:
    """Refuse a key the agent does not know: a misspelt one would silently do nothing.

    Raises:
        ValueError: Naming the key, where it is, and the nearest known key.
    """

    def refuse(key: str, known: Sequence[str], where: str) -> None:
        near = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"{path}: unknown key {key!r}{where}{hint}")

    for key in values:
        if key not in (*FILE_KEYS, "directory"):
            refuse(key, (*FILE_KEYS, "directory"), "")
    tables = values.get("directory", [])
    if not isinstance(tables, list):
        raise ValueError(f"{path}: directories are [[directory]] tables")  # noqa: TRY004 - config
    for number, table in enumerate(tables, 1):
        for key in table:
            if key not in DIRECTORY_KEYS:
                refuse(key, DIRECTORY_KEYS, f" in [[directory]] {number}")


def load_config(options: Mapping[str, Any], environ: Mapping[str, str]) -> AgentConfig:
    """Build the configuration: flags over ``PTA_AGENT_*`` variables over the config file.

    The file may list several ``[[directory]]`` tables (one per domain); flags describe one
    directory that serves every domain of the tenant.

    Args:
        options: Parsed flags by name (None when not given); ``config`` names the TOML file.
        environ: The process environment.

    Returns:
        The validated configuration.
    """
    file_values: dict[str, Any] = {}
    if path := options.get("config") or environ.get(ENV_PREFIX + "CONFIG"):
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
        _check_keys(file_values, path)
    flat = {
        key: options.get(key) or environ.get(ENV_PREFIX + key.upper()) or file_values.get(key)
        for key in FILE_KEYS
    }
    if not flat["state_dir"]:
        raise ValueError("--state-dir (or PTA_AGENT_STATE_DIR) is required")
    directories = [_directory(d) for d in file_values.get("directory", [])]
    if flat["ldap_url"]:
        directories.append(_directory(flat))
    return AgentConfig(
        state_dir=Path(flat["state_dir"]),
        directories=tuple(directories),
        max_in_flight=int(flat["max_in_flight"] or DEFAULT_MAX_IN_FLIGHT),
        metrics_listen=str(flat["metrics_listen"] or ""),
    )
