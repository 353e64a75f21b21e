"""A throwaway Samba Active Directory domain controller for the demo and the test suite.

Active Directory answers a failed simple bind with a ``data XXX`` subcode (52e bad password, 533
disabled, 773 must change, 532 expired, 701 account expired, 775 locked, 530 logon hours) that the
agent has to map to an outcome; only a real AD DC produces them, so this module runs Debian's
Samba as one, twin of :mod:`tooling.slapd`.  Each :class:`SambaDC` is private: a provisioned domain
restored from a cached tarball into its own temp dir, its own ``smb.conf`` (never
``/etc/samba/smb.conf``), only the ``ldap`` service, bound to 127.0.0.1 only, and a process group
that is always killed on exit.

Samba fixes its LDAP ports (389, 636, and 3268/3269 for the global catalog: no ``smb.conf``
option moves them, see ``source4/ldap_server/ldap_server.c``) and binds only to addresses of real
interfaces (``interfaces = 127.0.0.2`` gives "no network interfaces found"), so one SambaDC runs
per machine at a time: :meth:`SambaDC.start` waits for a machine-wide lock.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import structlog
from ldap3.utils.dn import escape_rdn

from tooling.ad_accounts import (
    AD_STATES,
    AdState,
    AdUser,
    filetime,
    ldif_modify,
    ldif_record,
    state_changes,
    unicode_pwd,
)
from tooling.daemon import Daemon, tail
from tooling.samba_host import (
    HOST,
    LDAP_PORT,
    LDAPS_PORT,
    MIN_PASSWORD_LENGTH,
    NETBIOS_NAME,
    PASSWORD_POLICY,
    answers,
    check_ports_free,
    default_cache_dir,
    machine_lock,
    provision,
    remove_stale_dirs,
    run,
    smb_conf,
    write_tls,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "AD_PACKAGES",
    "AD_STATES",
    "AdState",
    "AdUser",
    "SambaDC",
    "find_samba",
    "install_command",
    "samba_missing_reason",
]

log = structlog.get_logger()

#: Debian packages a SambaDC needs, installed with ``--no-install-recommends``.  samba only
#: recommends the ldb modules (dsdb) and ``acl_xattr`` (vfs) that provisioning fails without.
#: winbind, krb5-user and ldap-utils are not needed: an ldap-only DC opens none of their files.
AD_PACKAGES = (
    "samba",
    "samba-ad-provision",
    "samba-dsdb-modules",
    "samba-vfs-modules",
    "ldb-tools",
)
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
LOCK_TIMEOUT = 120.0
_RECIPE = 1  # bump when provisioning changes: caches made by older code are then ignored
_COMPLEX = "1"  # pwdProperties with DOMAIN_PASSWORD_COMPLEX, what --complexity=on stores
# DSDB_CONTROL_PASSWORD_BYPASS_LAST_SET_OID: lets pwdLastSet take any value (AD allows only 0
# and -1).  Samba honours it from local ldb tools only, never over LDAP.
_BYPASS_LAST_SET = "1.3.6.1.4.1.7165.4.3.20"
_TAR_XATTRS = ("--xattrs", "--xattrs-include=*", "--acls")  # sysvol carries NT ACLs in xattrs


def install_command() -> list[str]:
    """Return the ``apt-get`` command that installs :data:`AD_PACKAGES`."""
    return ["apt-get", "install", "-y", "--no-install-recommends", *AD_PACKAGES]


def find_samba() -> Path | None:
    """Locate the ``samba`` daemon, or return None when it is not installed."""
    for candidate in ("/usr/sbin/samba", shutil.which("samba")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def samba_missing_reason() -> str | None:
    """Say why no SambaDC can run here (a pytest skip reason), or None when one can."""
    parts = {
        "samba": find_samba() is not None and shutil.which("samba-tool") is not None,
        "samba-ad-provision": Path("/usr/share/samba/setup/provision.ldif").exists(),
        "samba-dsdb-modules": any(Path("/usr/lib").glob("*/samba/ldb/samba_dsdb.so")),
        "samba-vfs-modules": any(Path("/usr/lib").glob("*/samba/vfs/acl_xattr.so")),
        "ldb-tools": shutil.which("ldbmodify") is not None,
        "tar": shutil.which("tar") is not None,
    }
    if missing := [name for name, present in parts.items() if not present]:
        return (
            f"Samba AD DC not installed (no {', '.join(missing)}): {shlex.join(install_command())}"
        )
    if os.geteuid() != 0:
        return "a Samba AD DC runs as root only"
    return None


class SambaDC:
    """Context manager: a private AD DC on 127.0.0.1, in its own temp dir.

    Attributes:
        ldaps_url: ``ldaps://127.0.0.1:636`` while started, else ``""``.
        ldap_url: ``ldap://127.0.0.1:389`` (for StartTLS; plain simple binds are refused).
        directory: The private temp dir (``smb.conf``, database, log) while started.
        base_dn: The domain's DN, e.g. ``DC=ad,DC=example,DC=com``.
        upn_suffix: The realm in lower case: UPNs are ``sam@upn_suffix``.
        admin_dn: The domain Administrator.
        admin_password: Its password (random unless given).
        timings: Seconds spent in each step of the last start.

    """

    def __init__(  # noqa: PLR0913 - each option is one fact about the domain
        self,
        *,
        users: Sequence[AdUser],
        realm: str = "AD.EXAMPLE.COM",
        domain: str = "AD",
        admin_password: str | None = None,
        workdir: Path | None = None,
        cache_dir: Path | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
        old_password_minutes: int | None = None,
    ) -> None:
        r"""Describe the domain; nothing runs until :meth:`start`.

        Args:
            users: Accounts to create; sAMAccountNames must differ (ignoring case).
            realm: DNS name of the domain, upper case by convention.
            domain: NetBIOS name of the domain (``AD\user`` binds).
            admin_password: Administrator password; random (``secrets``) if omitted.
            workdir: Parent of the private temp dir (default: system temp dir).
            cache_dir: Where provisioned domains are cached (default ``~/.cache/pta``).
            lock_timeout: Seconds to wait for another SambaDC on this machine to stop.
            old_password_minutes: For how long a user's previous password still binds after
                they changed it (``old password allowed period``); None keeps Samba's default
                of 60, as Windows has it.

        Raises:
            ValueError: duplicate users, or a realm or domain AD would refuse.

        """
        if len({u.sam.casefold() for u in users}) != len(users):
            msg = "duplicate sAMAccountName in users"
            raise ValueError(msg)
        if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", realm):
            msg = f"realm must be a dotted DNS name, got {realm!r}"
            raise ValueError(msg)
        if not re.fullmatch(r"[A-Za-z0-9-]{1,15}", domain):
            msg = f"domain must be a NetBIOS name (1-15 letters, digits, -), got {domain!r}"
            raise ValueError(msg)
        self.users = tuple(users)
        self.realm, self.domain = realm.upper(), domain.upper()
        self.upn_suffix = realm.lower()
        self.base_dn = ",".join(f"DC={label}" for label in self.upn_suffix.split("."))
        self.admin_dn = f"CN=Administrator,CN=Users,{self.base_dn}"
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        self.ldaps_url = self.ldap_url = ""
        self.directory: Path | None = None
        self.timings: dict[str, float] = {}
        self._workdir, self._cache_dir, self._lock_timeout = workdir, cache_dir, lock_timeout
        self._old_password_minutes = old_password_minutes
        self._daemon: Daemon | None = None
        self._lock: IO[str] | None = None

    def __repr__(self) -> str:
        """Show the domain and where it listens, never a password."""
        return f"SambaDC(realm={self.realm!r}, ldaps_url={self.ldaps_url!r})"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the LDAPS certificate (``private/tls/ca.pem``).

        Raises:
            RuntimeError: not started.

        """
        return self._root() / "private" / "tls" / "ca.pem"

    def user_dn(self, sam: str) -> str:
        """Return the DN of a user created from an :class:`AdUser` with this ``sam``."""
        return f"CN={escape_rdn(sam)},CN=Users,{self.base_dn}"

    def upn(self, sam: str) -> str:
        """Return the user principal name of a user: ``sam@upn_suffix``."""
        return f"{sam}@{self.upn_suffix}"

    def set_state(self, sam: str, state: AdState) -> None:
        """Put a user in an account state now, clearing any other state it was in.

        Raises:
            RuntimeError: not started, or Samba refused the change.
            ValueError: unknown state.

        """
        if state not in AD_STATES:
            msg = f"unknown state {state!r}"
            raise ValueError(msg)
        self._ldbmodify(ldif_modify(self.user_dn(sam), state_changes(state, filetime())))

    def add_user(self, user: AdUser) -> None:
        """Create one more user in a running domain.

        Raises:
            RuntimeError: not started, or Samba refused the user.

        """
        self._ldbmodify(self._accounts_ldif([user], admin=False))
        self.users += (user,)

    def start(self) -> None:
        """Restore (or first provision) the domain, add the users, run Samba, wait for LDAPS.

        Raises:
            RuntimeError: already started, Samba missing, another DC holding the ports, or a
                step failed; Samba's own failures end with the tail of its log.

        """
        if self.directory is not None:
            msg = "the domain controller is already started"
            raise RuntimeError(msg)
        if reason := samba_missing_reason():
            raise RuntimeError(reason)
        began, self.timings = time.monotonic(), {}
        atexit.register(self.stop)
        try:
            self._lock = machine_lock(self._lock_timeout)
            check_ports_free()
            remove_stale_dirs(Path(self._workdir or tempfile.gettempdir()))
            archive = self._cached_domain()
            self.directory = root = Path(tempfile.mkdtemp(prefix="pta-samba-", dir=self._workdir))
            with self._timed("restore"):
                run(["tar", *_TAR_XATTRS, "-xf", archive, "-C", root])
            conf = smb_conf(root, self.realm, self.domain)
            if self._old_password_minutes is not None:
                conf += f"\told password allowed period = {self._old_password_minutes}\n"
            (root / "etc" / "smb.conf").write_text(conf)
            write_tls(root / "private" / "tls", f"{NETBIOS_NAME}.{self.upn_suffix}".lower())
            with self._timed("users"):
                self._ldbmodify(self._accounts_ldif(self.users, admin=True))
            with self._timed("ready"):
                self._spawn(root)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - began, 3)
        log.info("samba.started", url=self.ldaps_url, **self.timings)

    def stop(self) -> None:
        """Kill Samba's whole process group, remove the temp dir, release the machine lock.

        Idempotent; also registered with :mod:`atexit`.  Should even that not run, Samba ends
        itself: it runs with ``-i``, which stops it when its stdin (a pipe from us) closes.
        """
        atexit.unregister(self.stop)
        daemon, self._daemon, self.ldaps_url, self.ldap_url = self._daemon, None, "", ""
        if daemon is not None:
            daemon.stop(timeout=STOP_TIMEOUT)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            log.debug("samba.stopped", realm=self.realm)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> Self:
        """Start the domain controller for the duration of a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the domain controller whatever happened inside the block."""
        self.stop()

    def _root(self) -> Path:
        if self.directory is None:
            msg = "the domain controller is not started"
            raise RuntimeError(msg)
        return self.directory

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        began = time.monotonic()
        yield
        self.timings[step] = round(time.monotonic() - began, 3)

    def _cached_domain(self) -> Path:
        """Return the tarball of a freshly provisioned domain, provisioning it if need be.

        Provisioning takes seconds; untarring a copy, a fraction of one.  The key covers all
        that shapes the result, the Samba version included.  Callers hold the machine lock,
        so two processes never provision at once.
        """
        version = run([find_samba() or "samba", "-V"]).strip()
        facts = [_RECIPE, version, self.realm, self.domain, NETBIOS_NAME, PASSWORD_POLICY]
        key = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]
        cache_dir = self._cache_dir or default_cache_dir()
        archive = cache_dir / f"samba-{key}.tar"
        if archive.exists():
            return archive
        cache_dir.mkdir(parents=True, exist_ok=True)
        with (
            self._timed("provision"),
            tempfile.TemporaryDirectory(prefix="pta-samba-provision-", dir=self._workdir) as tmp,
        ):
            target = Path(tmp) / "dc"
            provision(target, self.realm, self.domain)
            partial = cache_dir / f".{archive.name}.{os.getpid()}"
            run(["tar", *_TAR_XATTRS, "-cf", partial, "-C", target, "."])
            partial.replace(archive)
        log.info("samba.provisioned", archive=str(archive), seconds=self.timings["provision"])
        return archive

    def _accounts_ldif(self, users: Sequence[AdUser], *, admin: bool) -> str:
        """LDIF setting the admin password and adding users, in one ldb transaction.

        The password policy is relaxed at its start and restored at its end: Samba applies
        length and complexity even to local ldb writes, and test passwords need not be strong.
        Being one transaction, the running server never sees the relaxed policy.
        """
        now = filetime()
        relaxed = [("pwdProperties", "0"), ("minPwdLength", "0")]
        parts = [ldif_modify(self.base_dn, relaxed)]
        if admin:
            parts.append(
                ldif_modify(
                    self.admin_dn, [unicode_pwd(self.admin_password), ("pwdLastSet", str(now))]
                )
            )
        for user in users:
            attrs: list[tuple[str, str | bytes]] = [
                ("objectClass", "user"),
                ("sAMAccountName", user.sam),
                ("userPrincipalName", self.upn(user.sam)),
                unicode_pwd(user.password),
                ("pwdLastSet", str(now)),
            ]
            attrs += [("mail", user.mail)] if user.mail else []
            parts.append(ldif_record(self.user_dn(user.sam), "add", attrs))
            parts.append(ldif_modify(self.user_dn(user.sam), state_changes(user.state, now)))
        strict = [("pwdProperties", _COMPLEX), ("minPwdLength", str(MIN_PASSWORD_LENGTH))]
        parts.append(ldif_modify(self.base_dn, strict))
        return "".join(parts)

    def _ldbmodify(self, ldif: str) -> None:
        """Apply LDIF to ``sam.ldb`` directly, running or not (as ``samba-tool`` does).

        The LDIF goes through stdin, so no password is ever written to a file.
        """
        sam_ldb = self._root() / "private" / "sam.ldb"
        argv = ["ldbmodify", "-H", str(sam_ldb), f"--controls=local_oid:{_BYPASS_LAST_SET}:0"]
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, input=ldif, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            msg = f"ldbmodify failed with {done.returncode}: {tail(done.stderr + done.stdout)}"
            raise RuntimeError(msg)

    def _spawn(self, root: Path) -> None:
        binary = find_samba() or Path("samba")
        conf = root / "etc" / "smb.conf"
        # stdin held open: its EOF at our death stops Samba (-i), however we die.
        self._daemon = Daemon(
            "samba", [binary, "-i", "-d", "1", "-s", conf], root / "samba.log", hold_stdin=True
        )
        self._daemon.start(
            lambda: answers(self.admin_dn, self.admin_password, self.ca_file),
            timeout=READY_TIMEOUT,
            poll=0.05,
        )
        self.ldaps_url = f"ldaps://{HOST}:{LDAPS_PORT}"
        self.ldap_url = f"ldap://{HOST}:{LDAP_PORT}"
