"""A throwaway OpenLDAP server for the demo, the test suite and the benchmark.

Pass-through authentication has to be exercised against a real directory:
only a real slapd with the ``ppolicy`` overlay answers binds with the exact
result codes and password-policy controls (account locked, password expired,
password must be changed) that the agent has to interpret; a mock would only
mirror our own assumptions.  Each :class:`Slapd` is private: its own temporary
directory, its own ``slapd.conf`` (never ``cn=config``), a free port on
127.0.0.1 only, and a child process that is always killed on exit.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import ldap3
import structlog
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn, parse_dn

from tooling.daemon import Daemon, DaemonExited, tail

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["DirectoryUser", "Slapd", "find_slapd", "free_port", "ssha"]

log = structlog.get_logger()

LOCKED_FOREVER = "000001010000Z"  # ppolicy: locked by an administrator, no expiry
LONG_AGO = "20000101000000Z"  # a pwdChangedTime beyond any pwdMaxAge
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3  # another process may take the free port before slapd binds it
_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
_Attrs = dict[str, "str | Sequence[str] | None"]
_POLICY: _Attrs = {
    "objectClass": ("device", "pwdPolicy"),  # pwdPolicy is auxiliary in 2.5
    "cn": "default",
    "pwdAttribute": "userPassword",
    "pwdMaxAge": str(86400 * 90),
    "pwdMaxFailure": "5",
    "pwdLockout": "TRUE",
    "pwdLockoutDuration": "300",
    "pwdGraceAuthNLimit": "0",
    "pwdMustChange": "TRUE",
    "pwdAllowUserChange": "TRUE",
    "pwdMinLength": "8",
    "pwdCheckQuality": "2",
    "pwdInHistory": "3",
}
_TOP_CLASSES = {
    "dc": ("dcObject", "organization"),
    "o": ("organization",),
    "ou": ("organizationalUnit",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryUser:
    """One ``inetOrgPerson`` loaded into the directory before slapd starts.

    The ppolicy flags put the account in a state a real server only reaches
    after an administrator's action or ninety days, so tests can see the agent
    handle each answer.

    Attributes:
        uid: ``uid`` attribute and RDN value; any non-empty string.
        password: Clear-text password, stored as ``{SSHA}``.
        given_name: Optional ``givenName``; part of ``cn``.
        surname: Optional ``sn``; part of ``cn`` (``sn`` falls back to uid).
        mail: Optional ``mail``.
        locked: Administratively locked: binds fail with "Account locked".
        must_change: Reset by an administrator: binds succeed with a
            "Password must be changed" control.
        expired: Older than ``pwdMaxAge``, no grace: "Password expired".

    """

    uid: str
    password: str = field(repr=False)
    given_name: str = ""
    surname: str = ""
    mail: str | None = None
    locked: bool = False
    must_change: bool = False
    expired: bool = False

    def __post_init__(self) -> None:
        """Reject a uid that no directory entry could carry."""
        if not self.uid.strip():
            msg = "DirectoryUser.uid must not be blank"
            raise ValueError(msg)

    @property
    def common_name(self) -> str:
        """The ``cn``: given name and surname, or the uid when both are empty."""
        return f"{self.given_name} {self.surname}".strip() or self.uid


def find_slapd() -> Path:
    """Locate slapd, which also loads the database when run as ``slapd -Ta``.

    Raises:
        RuntimeError: slapd is not installed; the message says how to fix it.

    """
    for candidate in ("/usr/sbin/slapd", shutil.which("slapd")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    msg = "slapd not found: install it with `apt-get install slapd ldap-utils`"
    raise RuntimeError(msg)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssha(password: str) -> str:
    """Hash a password in the salted-SHA1 format slapd's ``{SSHA}`` verifies."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _ldif_line(name: str, value: str) -> str:
    """Render one LDIF line, base64-encoding what RFC 2849 calls unsafe."""
    unsafe = set(value) & {"\0", "\r", "\n"} or value.startswith((" ", ":", "<"))
    if value.isascii() and not unsafe and not value.endswith(" "):
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode()).decode('ascii')}\n"


def _entry(dn: str, attrs: _Attrs) -> str:
    """Render one LDIF entry; ``None`` and empty values are left out."""
    lines = [_ldif_line("dn", dn)]
    for name, values in attrs.items():
        for value in [values] if isinstance(values, str) else values or ():
            lines.extend([_ldif_line(name, value)] if value else [])
    return "".join(lines) + "\n"


def _quote(value: object) -> str:
    """Quote a slapd.conf argument so spaces, quotes and backslashes survive."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class Slapd:
    """Context manager: a private slapd on a free 127.0.0.1 port, in its own temp dir.

    Attributes:
        url: ``ldap://127.0.0.1:PORT`` while started, else ``""``.
        port: The listening port while started, else 0.
        directory: The private temp dir (config, database, log) while started.
        base_dn: Suffix of the database; ``people_dn`` holds the users.
        admin_dn: The rootdn, which bypasses ACLs and password policy.
        admin_password: The rootdn's password (random unless given).

    """

    def __init__(  # noqa: PLR0913 - keyword-only knobs, each with a default
        self,
        *,
        users: Sequence[DirectoryUser],
        base_dn: str = "dc=example,dc=com",
        admin_password: str | None = None,
        workdir: Path | None = None,
        slapd_binary: Path | None = None,
        policy: Mapping[str, str] | None = None,
        private_policies: bool = False,
        self_service: bool = True,
    ) -> None:
        """Describe the directory; nothing runs until :meth:`start`.

        Args:
            users: Entries to create under ``ou=people``; uids must differ.
            base_dn: Suffix; its first RDN must be ``dc=``, ``o=`` or ``ou=``.
            admin_password: rootdn password; random (``secrets``) if omitted.
            workdir: Parent of the private temp dir (default: system temp dir).
            slapd_binary: slapd to run (default: :func:`find_slapd`).
            policy: Attributes that replace the default password policy's (the benchmark
                turns lockout off: its wrong passwords would lock its users).
            private_policies: Let only bound users (a service account) read
                ``ou=policies``, as a deployment that hides its policies from anonymous
                readers; by default everyone reads everything but passwords.
            self_service: Let users write their own ``userPassword``; without it the ACL is
                slapd's default (``access to * by * read``): a user's password change is
                refused with insufficientAccessRights.

        Raises:
            ValueError: duplicate uids or an unsupported ``base_dn``.

        """
        if len({u.uid.casefold() for u in users}) != len(users):  # uid ignores case
            msg = "duplicate uid in users"
            raise ValueError(msg)
        attr, value, _ = parse_dn(base_dn)[0]
        classes = _TOP_CLASSES.get(attr.lower())
        if classes is None:
            msg = f"base_dn must start with dc=, o= or ou=, got {base_dn!r}"
            raise ValueError(msg)
        self._top: _Attrs = {"objectClass": classes, attr: value}
        if "organization" in classes:
            self._top["o"] = value
        self.users = tuple(users)
        self.base_dn = base_dn
        self.people_dn = f"ou=people,{base_dn}"
        self.admin_dn = f"cn=admin,{base_dn}"
        self.policy_dn = f"cn=default,ou=policies,{base_dn}"
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        self._policy: _Attrs = {**_POLICY, **(policy or {})}
        self._private_policies = private_policies
        self._self_service = self_service
        self.url, self.port = "", 0
        self.directory: Path | None = None
        self._workdir, self._binary = workdir, slapd_binary
        self._daemon: Daemon | None = None

    def __repr__(self) -> str:
        """Show where the server is, never the admin password."""
        return f"Slapd(base_dn={self.base_dn!r}, url={self.url!r})"

    @property
    def pid(self) -> int | None:
        """The slapd process id while started (the benchmark reads its CPU counters)."""
        return self._daemon.pid if self._daemon is not None else None

    def user_dn(self, uid: str) -> str:
        """Return the DN of a user, with the uid escaped as an RDN value."""
        return f"uid={escape_rdn(uid)},{self.people_dn}"

    def _ldif(self) -> str:
        ou = "organizationalUnit"
        parts = [
            _entry(self.base_dn, self._top),
            _entry(self.people_dn, {"objectClass": ou, "ou": "people"}),
            _entry(f"ou=policies,{self.base_dn}", {"objectClass": ou, "ou": "policies"}),
            _entry(self.policy_dn, self._policy),
        ]
        parts += [
            _entry(
                self.user_dn(u.uid),
                {
                    "objectClass": "inetOrgPerson",
                    "uid": u.uid,
                    "cn": u.common_name,
                    "sn": u.surname or u.uid,
                    "givenName": u.given_name,
                    "mail": u.mail,
                    "userPassword": ssha(u.password),
                    "pwdAccountLockedTime": LOCKED_FOREVER if u.locked else None,
                    "pwdReset": "TRUE" if u.must_change else None,
                    "pwdChangedTime": LONG_AGO if u.expired else None,
                },
            )
            for u in self.users
        ]
        return "".join(parts)

    def _conf(self, root: Path) -> str:
        schemas = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in _SCHEMAS)
        policies = _quote(f"ou=policies,{self.base_dn}")
        private = f"access to dn.subtree={policies} by users read by * none\n"
        # Without self-service, slapd's own default: everyone reads everything, nobody writes.
        own = "access to attrs=userPassword by self write by anonymous auth by * none\n"
        return f"""{schemas}
pidfile {_quote(root / "slapd.pid")}
argsfile {_quote(root / "slapd.args")}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy

database mdb
maxsize {64 * 1024 * 1024}
suffix {_quote(self.base_dn)}
rootdn {_quote(self.admin_dn)}
rootpw {_quote(ssha(self.admin_password))}
directory {_quote(root / "data")}

overlay ppolicy
ppolicy_default {_quote(self.policy_dn)}
ppolicy_use_lockout

{own if self._self_service else ""}{private if self._private_policies else ""}access to * by * read
"""

    def start(self) -> None:
        """Write config and LDIF, load them, run slapd and wait until it answers.

        Raises:
            RuntimeError: already started, or slapadd/slapd failed or did not
                answer within ``READY_TIMEOUT``; the message ends with the tail
                of slapd's output.

        """
        if self.directory is not None:
            msg = "slapd is already started"
            raise RuntimeError(msg)
        binary = self._binary or find_slapd()
        began = time.monotonic()
        self.directory = root = Path(tempfile.mkdtemp(prefix="pta-slapd-", dir=self._workdir))
        atexit.register(self.stop)
        try:
            (root / "data").mkdir()
            (root / "slapd.conf").write_text(self._conf(root))
            (root / "users.ldif").write_text(self._ldif())
            _slapadd(binary, root)
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._spawn(binary, root)
                    break
                except DaemonExited:
                    if attempt == _START_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        log.info("slapd.started", url=self.url, seconds=round(time.monotonic() - began, 3))

    def pause(self) -> None:
        """Stop the server process but keep its data and port: a directory outage."""
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            daemon.stop(timeout=STOP_TIMEOUT)

    def resume(self) -> None:
        """Start the paused server again on the same port, with the same data.

        Raises:
            RuntimeError: When it was never started.
        """
        if self.directory is None or not self.port:
            msg = "slapd was never started"
            raise RuntimeError(msg)
        self._spawn(self._binary or find_slapd(), self.directory, self.port)

    def _spawn(self, binary: Path, root: Path, port: int | None = None) -> None:
        port = port or free_port()
        url = f"ldap://127.0.0.1:{port}"
        argv: list[str | Path] = [binary, "-d", "none", "-f", root / "slapd.conf", "-h", f"{url}/"]
        self._daemon = Daemon("slapd", argv, root / "slapd.log", die_with_parent=True)
        try:
            self._daemon.start(
                lambda: _answers(port, self.admin_dn, self.admin_password), timeout=READY_TIMEOUT
            )
        except BaseException:
            self._daemon = None
            raise
        self.url, self.port = url, port

    def stop(self) -> None:
        """Terminate slapd (kill it if it lingers) and remove the temp dir.

        Idempotent; also registered with :mod:`atexit` so that an interpreter
        exit that skips ``__exit__`` leaves no process behind.
        """
        atexit.unregister(self.stop)
        daemon, self._daemon, self.url, self.port = self._daemon, None, "", 0
        if daemon is not None:
            daemon.stop(timeout=STOP_TIMEOUT)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            log.debug("slapd.stopped", base_dn=self.base_dn)

    def __enter__(self) -> Self:
        """Start the server for the duration of a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server whatever happened inside the block."""
        self.stop()


def _slapadd(binary: Path, root: Path) -> None:
    """Load the LDIF offline: the only way to set ppolicy's operational attributes."""
    conf, ldif = root / "slapd.conf", root / "users.ldif"
    argv: list[str | Path] = [binary, "-Ta", "-q", "-f", conf, "-l", ldif]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    if done.returncode != 0:
        msg = f"slapadd failed with {done.returncode}: {tail(done.stderr)}"
        raise RuntimeError(msg)


def _answers(port: int, dn: str, password: str) -> bool:
    """Whether ``port`` accepts TCP and then an LDAP bind as ``dn`` right now.

    Binding as the rootdn, not anonymously, proves that the server on the port
    is ours and has its database open, not a stranger that took the port.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE, connect_timeout=1)
        conn = ldap3.Connection(server, dn, password, receive_timeout=1)
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()
    except (OSError, LDAPException):
        return False
