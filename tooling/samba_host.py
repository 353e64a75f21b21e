"""What a Samba DC takes from the machine: a provisioned domain, its config, TLS, one lock.

Samba fixes its LDAP ports and binds only to real interfaces (see :mod:`tooling.samba`), so one
DC runs per machine at a time, behind a machine-wide lock; provisioning is slow, so the
domain is provisioned once and cached. :class:`tooling.samba.SambaDC` runs the process.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import ldap3
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from ldap3.core.exceptions import LDAPException

from pta import tls
from tooling.daemon import tail

if TYPE_CHECKING:
    from collections.abc import Sequence

log = structlog.get_logger()

HOST = "127.0.0.1"
LDAP_PORT, LDAPS_PORT = 389, 636  # fixed by Samba, see the module docstring
NETBIOS_NAME = "DC"  # not the machine's host name, so the cached domain fits any machine
LOCKOUT_THRESHOLD = 5  # wrong passwords in a row lock an account (for 30 minutes)
MIN_PASSWORD_LENGTH = 7  # Samba's default; complexity stays on, as in a fresh AD
PROVISION_PASSWORD = "Provision-only-1"  # noqa: S105 - replaced at every start
#: `samba-tool domain passwordsettings set`: the defaults but min age 0, and a lockout.
PASSWORD_POLICY = (
    "--complexity=on",
    f"--min-pwd-length={MIN_PASSWORD_LENGTH}",
    "--min-pwd-age=0",  # else users could not change a password set by a test that same day
    "--max-pwd-age=42",
    f"--account-lockout-threshold={LOCKOUT_THRESHOLD}",
    "--account-lockout-duration=30",
    "--reset-account-lockout-after=30",
)
LOCK_FILE = Path(tempfile.gettempdir()) / "pta-samba-dc.lock"


def default_cache_dir() -> Path:
    """Where the provisioned domain is cached between runs (``$XDG_CACHE_HOME/pta``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pta"


def run(argv: Sequence[str | Path], timeout: float = 120) -> str:
    """Run a tool to completion; fail with its output's tail, never with a password in it."""
    done = subprocess.run(  # noqa: S603 - argv built here from fixed tool names
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tool, output = Path(argv[0]).name, done.stderr + done.stdout
        msg = f"{tool} failed with {done.returncode}: {tail(output)}"
        raise RuntimeError(msg)
    return done.stdout


def provision(target: Path, realm: str, domain: str) -> None:
    """Provision a domain into ``target`` and set its password policy.

    An empty ``--configfile`` keeps ``/etc/samba/smb.conf`` out; the later ``samba-tool`` runs
    name the provisioned one for the same reason.
    """
    target.parent.joinpath("empty.conf").write_text("")
    run([
        "samba-tool", "domain", "provision",
        f"--configfile={target.parent / 'empty.conf'}",
        f"--targetdir={target}",
        f"--realm={realm}",
        f"--domain={domain}",
        f"--host-name={NETBIOS_NAME}",
        "--server-role=dc",
        "--dns-backend=NONE",
        f"--adminpass={PROVISION_PASSWORD}",
        f"--option=interfaces={HOST}",
        "--option=bind interfaces only=yes",
        "--option=server services=ldap",
    ])  # fmt: skip
    conf, sam_ldb = target / "etc" / "smb.conf", target / "private" / "sam.ldb"
    run(
        [
            "samba-tool",
            "domain",
            "passwordsettings",
            "set",
            "-s",
            conf,
            "-H",
            sam_ldb,
            *PASSWORD_POLICY,
        ]
    )


def smb_conf(root: Path, realm: str, domain: str) -> str:
    """The per-run configuration: the provisioned one's, with every path inside ``root``.

    Only the ``ldap`` service runs (no kdc, dns, smb, rpc): simple binds need nothing else.
    """
    return f"""[global]
	netbios name = {NETBIOS_NAME}
	realm = {realm}
	workgroup = {domain}
	server role = active directory domain controller
	server services = ldap
	interfaces = {HOST}
	bind interfaces only = yes
	private dir = {root}/private
	binddns dir = {root}/bind-dns
	lock directory = {root}
	state directory = {root}/state
	cache directory = {root}/cache
	pid directory = {root}
	ncalrpc dir = {root}/ncalrpc
"""


def write_tls(tls_dir: Path, dns_name: str) -> None:
    """Write a CA and a server certificate valid for 127.0.0.1 where Samba looks for them.

    Samba would make its own, but for ``CN=<host>.<realm>`` with no subjectAltName: a client
    connecting to 127.0.0.1 and checking the name (ldap3 does, the agent does) rejects it.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = tls.new_private_key(), tls.new_private_key()
    ca_name = tls.name("pta throwaway AD CA")
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)
    ca = (
        x509.CertificateBuilder()
        .issuer_name(ca_name)
        .subject_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .issuer_name(ca_name)
        .subject_name(tls.name(dns_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls.write_public(tls_dir / "ca.pem", tls.cert_pem(ca))
    tls.write_public(tls_dir / "cert.pem", tls.cert_pem(cert))
    tls.write_private(tls_dir / "key.pem", tls.key_pem(key))  # Samba refuses a readable key


def machine_lock(timeout: float) -> IO[str]:
    """Take the lock that lets one SambaDC at a time own 127.0.0.1's LDAP ports.

    Raises:
        RuntimeError: another SambaDC still held it after ``timeout`` seconds.

    """
    handle = LOCK_FILE.open("a")
    deadline, waited = time.monotonic() + timeout, False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                msg = f"another SambaDC on this machine held {LOCK_FILE} for {timeout} s"
                raise RuntimeError(msg) from None
            if not waited:
                log.info("samba.waiting", lock=str(LOCK_FILE))
                waited = True
            time.sleep(0.1)
        else:
            return handle


def remove_stale_dirs(parent: Path) -> None:
    """Remove the temp dirs of SambaDCs whose process was killed before it could clean up.

    Only the holder of the machine lock runs a SambaDC, so under the lock any such dir is stale.
    """
    for stale in parent.glob("pta-samba-*"):
        if stale.is_dir():
            log.info("samba.stale_dir_removed", path=str(stale))
            shutil.rmtree(stale, ignore_errors=True)


def check_ports_free() -> None:
    """Fail clearly when something else (a system samba or slapd?) holds an LDAP port."""
    for port in (LDAP_PORT, LDAPS_PORT, 3268, 3269):
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            msg = f"{HOST}:{port} is taken by another process: Samba can use no other port"
            raise RuntimeError(msg)


def answers(dn: str, password: str, ca_file: Path) -> bool:
    """Whether Samba answers an LDAPS bind as the Administrator right now.

    A fresh ``ldap3.Server`` each time: one that failed to connect marks its address
    unavailable for five seconds, which would stall start-up that long.
    """
    tls_config = ldap3.Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED)
    server = ldap3.Server(
        HOST, port=LDAPS_PORT, use_ssl=True, tls=tls_config, get_info=ldap3.NONE, connect_timeout=1
    )
    conn = ldap3.Connection(server, dn, password, receive_timeout=5)
    try:
        conn.open()
        return bool(conn.bind())
    except (OSError, LDAPException):
        return False
    finally:
        with contextlib.suppress(OSError, LDAPException):
            conn.unbind()
