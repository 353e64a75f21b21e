"""Tests for the throwaway Samba AD DC: every account state answers a bind as AD does.

They run a real Samba DC, so they are skipped, with the install command as the reason, where
Samba is missing or the run is not root.  One DC serves the whole module: Samba's LDAP ports
are fixed, so only one can run on a machine at a time.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ldap3
import pytest

from tests.secrets_registry import secret
from tests.support import listeners
from tooling.daemon import group_members
from tooling.samba import (
    AD_PACKAGES,
    AdState,
    AdUser,
    SambaDC,
    find_samba,
    install_command,
    samba_missing_reason,
)
from tooling.samba_host import LOCKOUT_THRESHOLD

if TYPE_CHECKING:
    from collections.abc import Iterator

REASON = samba_missing_reason()
# ldap3 2.9.1 checks certificate names with ssl.match_hostname: its deprecation, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
needs_samba = pytest.mark.skipif(REASON is not None, reason=REASON or "")
INVALID_CREDENTIALS = 49
STRONGER_AUTH_REQUIRED = 8
#: Each state's ``data`` subcode for the right password, as Windows AD sends it too.
STATE_CODES: list[tuple[AdState, str | None]] = [
    ("normal", None),
    ("disabled", "533"),
    ("must_change", "773"),
    ("expired", "532"),
    ("account_expired", "701"),
    ("locked", "775"),
    ("logon_hours", "530"),
]
ALICE = AdUser(sam="alice", password=secret("alice-pw"), mail="alice@mail.example")
USERS = [
    ALICE,
    *(
        AdUser(sam=state, password=secret(f"pw-{state[:2]}"), state=state)
        for state, _ in STATE_CODES[1:]
    ),
    AdUser(sam="mallory", password=secret("mallory-pw")),  # locked by wrong passwords
    AdUser(sam="henry", password=secret("henry-pw")),  # moved through every state
]
PASSWORDS = {user.sam: user.password for user in USERS}


@pytest.fixture(scope="module")
def dc() -> Iterator[SambaDC]:
    """One domain controller with a user in each state, shared by this module."""
    with SambaDC(users=USERS) as server:
        yield server


def bind(dc: SambaDC, name: str, password: str, *, start_tls: bool = False) -> dict[str, Any]:
    """Simple-bind a new connection over LDAPS (or StartTLS) and return the bind result."""
    tls = ldap3.Tls(ca_certs_file=str(dc.ca_file), validate=ssl.CERT_REQUIRED)
    url = dc.ldap_url if start_tls else dc.ldaps_url
    conn = ldap3.Connection(ldap3.Server(url, tls=tls, get_info=ldap3.NONE), name, password)
    conn.open()
    if start_tls:
        conn.start_tls()
    conn.bind()
    result: dict[str, Any] = conn.result
    conn.unbind()
    return result


def subcode(result: dict[str, Any]) -> str | None:
    """The AD ``data XXX`` subcode of a bind result, or None when there is none."""
    found = re.search(r"data ([0-9a-f]+)", result["message"])
    return found.group(1) if found else None


def assert_answer(result: dict[str, Any], expected: str | None) -> None:
    """Check a bind succeeded (``expected`` None) or failed: invalidCredentials, that subcode."""
    code = 0 if expected is None else INVALID_CREDENTIALS
    assert (result["result"], subcode(result)) == (code, expected)


@needs_samba
class TestAccountStates:
    """The right password of a user in each state gets the answer AD gives."""

    @pytest.mark.parametrize(("state", "code"), STATE_CODES, ids=[s for s, _ in STATE_CODES])
    def test_right_password_by_upn(self, dc: SambaDC, state: str, code: str | None) -> None:
        """A UPN bind with the right password answers the state's subcode."""
        sam = "alice" if state == "normal" else state
        assert_answer(bind(dc, dc.upn(sam), PASSWORDS[sam]), code)

    @pytest.mark.parametrize(("state", "code"), STATE_CODES, ids=[s for s, _ in STATE_CODES])
    def test_right_password_by_dn(self, dc: SambaDC, state: str, code: str | None) -> None:
        """A DN bind gets the same answer as a UPN bind."""
        sam = "alice" if state == "normal" else state
        assert_answer(bind(dc, dc.user_dn(sam), PASSWORDS[sam]), code)

    @pytest.mark.parametrize(
        "name",
        ["alice@ad.example.com", "ALICE@AD.EXAMPLE.COM", "AD\\alice"],
        ids=["upn", "upn-upper-case", "netbios"],
    )
    def test_name_forms_of_a_normal_user(self, dc: SambaDC, name: str) -> None:
        r"""A normal user binds by UPN in any case and as ``NETBIOS\user``."""
        assert_answer(bind(dc, name, ALICE.password), None)

    def test_wrong_password_is_52e(self, dc: SambaDC) -> None:
        """A wrong password for a normal user is invalidCredentials with data 52e."""
        assert_answer(bind(dc, dc.upn("alice"), secret("not-her-password")), "52e")

    def test_unknown_user_is_52e(self, dc: SambaDC) -> None:
        """Samba answers an unknown user like a wrong password (Windows would send 525)."""
        assert_answer(bind(dc, dc.upn("nobody"), secret("whatever")), "52e")

    def test_locked_user_wrong_password_is_775(self, dc: SambaDC) -> None:
        """Once locked, even a wrong password gets 775, not 52e."""
        assert_answer(bind(dc, dc.upn("locked"), secret("wrong-pw")), "775")


@needs_samba
class TestSetState:
    """A state set on a running DC takes effect at once and replaces the previous one."""

    @pytest.mark.parametrize(
        ("state", "code"),
        [*STATE_CODES[1:], STATE_CODES[0]],  # back to normal last: it clears the others
        ids=[*(s for s, _ in STATE_CODES[1:]), "back-to-normal"],
    )
    def test_state_applies_to_the_next_bind(
        self, dc: SambaDC, state: AdState, code: str | None
    ) -> None:
        """After set_state, henry's right password gets the new state's answer."""
        dc.set_state("henry", state)
        assert_answer(bind(dc, dc.upn("henry"), PASSWORDS["henry"]), code)

    def test_wrong_passwords_lock_and_normal_unlocks(self, dc: SambaDC) -> None:
        """The lockout threshold locks a user; set_state("normal") unlocks and resets the count."""
        guess = secret("guess")
        for _ in range(LOCKOUT_THRESHOLD):
            assert_answer(bind(dc, dc.upn("mallory"), guess), "52e")
        assert_answer(bind(dc, dc.upn("mallory"), PASSWORDS["mallory"]), "775")
        dc.set_state("mallory", "normal")
        assert_answer(bind(dc, dc.upn("mallory"), guess), "52e")
        assert_answer(bind(dc, dc.upn("mallory"), PASSWORDS["mallory"]), None)

    def test_added_user_binds(self, dc: SambaDC) -> None:
        """A user added to the running domain binds at once."""
        late = secret("late-pw")
        dc.add_user(AdUser(sam="late", password=late, state="disabled"))
        assert_answer(bind(dc, dc.upn("late"), late), "533")


@needs_samba
class TestTransport:
    """Samba listens on loopback only, with a certificate a checking client accepts."""

    def test_listens_on_loopback_only(self, dc: SambaDC) -> None:
        """Every LDAP listener (389, 636, 3268, 3269) is on 127.0.0.1; none on IPv6."""
        del dc
        ports = {389, 636, 3268, 3269}
        found = {listener for listener in listeners() if listener[2] in ports}
        assert found == {("tcp", "127.0.0.1", port) for port in ports}

    def test_start_tls_on_the_plain_port(self, dc: SambaDC) -> None:
        """ldap_url with StartTLS and the CA file accepts a simple bind."""
        assert_answer(bind(dc, dc.upn("alice"), ALICE.password, start_tls=True), None)

    def test_plain_simple_bind_needs_tls(self, dc: SambaDC) -> None:
        """Without TLS, AD refuses a simple bind with strongerAuthRequired."""
        server = ldap3.Server(dc.ldap_url, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, dc.upn("alice"), ALICE.password)
        conn.open()
        conn.bind()
        assert conn.result["result"] == STRONGER_AUTH_REQUIRED
        conn.unbind()

    def test_mail_is_stored(self, dc: SambaDC) -> None:
        """The user's mail attribute is searchable, for alternate login IDs."""
        tls = ldap3.Tls(ca_certs_file=str(dc.ca_file), validate=ssl.CERT_REQUIRED)
        server = ldap3.Server(dc.ldaps_url, tls=tls, get_info=ldap3.NONE)
        with ldap3.Connection(server, dc.admin_dn, dc.admin_password, auto_bind=True) as conn:
            conn.search(dc.base_dn, "(mail=alice@mail.example)", attributes=["sAMAccountName"])
            assert [e.entry_dn for e in conn.entries] == [dc.user_dn("alice")]


@needs_samba
class TestLifecycle:
    """One DC per machine; stop() leaves nothing running and start() can follow."""

    def test_second_dc_gives_up_clearly(self, dc: SambaDC) -> None:
        """A second DC waits for the machine lock, then fails without harming the first."""
        with pytest.raises(RuntimeError, match="another SambaDC"):
            SambaDC(users=[], lock_timeout=0.2).start()
        assert_answer(bind(dc, dc.upn("alice"), ALICE.password), None)

    def test_stop_leaves_no_process_then_restarts(self, dc: SambaDC) -> None:
        """stop() kills every Samba process, frees the port and the dir; start() works again."""
        assert dc._daemon is not None
        assert dc._daemon.pid is not None
        assert dc.directory is not None
        pgid, directory = dc._daemon.pid, dc.directory
        assert len(group_members(pgid)) > 1  # the root and its prefork workers
        dc.stop()
        assert group_members(pgid) == []
        assert not directory.exists()
        assert subprocess.run(["pgrep", "-f", str(directory)], check=False).returncode == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", 636), timeout=1).close()
        dc.stop()
        assert dc.ldaps_url == ""
        dc.start()
        assert_answer(bind(dc, dc.upn("alice"), ALICE.password), None)


class TestAdUser:
    """AdUser refuses what AD would refuse and hides its password."""

    @pytest.mark.parametrize(
        "sam",
        ["", " ", "a" * 21, "a@b", "x,y", "q[1]"],
        ids=["empty", "blank", "long", "@", ",", "[]"],
    )
    def test_invalid_sam(self, sam: str) -> None:
        """A sAMAccountName AD forbids is refused at construction."""
        with pytest.raises(ValueError, match="sAMAccountName"):
            AdUser(sam=sam, password=secret("pw"))

    def test_empty_password(self) -> None:
        """An empty password is refused: AD would treat its bind as anonymous."""
        with pytest.raises(ValueError, match="password"):
            AdUser(sam="alice", password="")

    def test_repr_hides_password(self) -> None:
        """A user's repr shows its name and state, never its password."""
        assert repr(ALICE).startswith("AdUser(sam='alice'")
        assert ALICE.password not in repr(ALICE)


class TestSambaDCSetup:
    """A SambaDC checks its options and exposes nothing before start()."""

    def test_repr_hides_admin_password(self) -> None:
        """The DC's repr shows the realm, never the admin password."""
        admin_password = secret("Admin-secret-1")
        server = SambaDC(users=[ALICE], admin_password=admin_password)
        assert "AD.EXAMPLE.COM" in repr(server)
        assert admin_password not in repr(server)

    def test_names_derive_from_the_realm(self) -> None:
        """Base DN, UPN suffix and user DNs follow the realm, with RDN values escaped."""
        server = SambaDC(users=[], realm="corp.example.org", domain="corp")
        assert server.base_dn == "DC=corp,DC=example,DC=org"
        assert server.upn("bob") == "bob@corp.example.org"
        assert server.user_dn("o'neil#1") == "CN=o'neil#1,CN=Users,DC=corp,DC=example,DC=org"
        assert (server.realm, server.domain) == ("CORP.EXAMPLE.ORG", "CORP")

    def test_nothing_before_start(self) -> None:
        """Before start() there is no URL, and the CA file and set_state say so."""
        server = SambaDC(users=[ALICE])
        assert server.ldaps_url == ""
        with pytest.raises(RuntimeError, match="not started"):
            _ = server.ca_file
        with pytest.raises(RuntimeError, match="not started"):
            server.set_state("alice", "locked")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"users": [ALICE, AdUser(sam="ALICE", password=secret("x"))]},
            {"users": [], "realm": "nodots"},
            {"users": [], "domain": "NETBIOS-IS-15-MAX"},
        ],
        ids=["duplicate-sam", "realm-without-dots", "domain-too-long"],
    )
    def test_invalid_domain(self, kwargs: dict[str, Any]) -> None:
        """Duplicate users (ignoring case), a realm without dots, a long domain are refused."""
        with pytest.raises(ValueError, match=r"duplicate|realm|domain"):
            SambaDC(**kwargs)


class TestInstall:
    """What the install script needs, and a clear reason when Samba is missing."""

    def test_install_command_names_every_package(self) -> None:
        """The command installs every package, without recommends."""
        argv = install_command()
        assert argv[:2] == ["apt-get", "install"]
        assert "--no-install-recommends" in argv
        assert set(AD_PACKAGES) <= set(argv)

    def test_missing_reason_matches_the_machine(self) -> None:
        """No reason where Samba is installed (and we are root); else one naming the fix."""
        if find_samba() is None:
            assert REASON is not None
            assert "apt-get install" in REASON
        else:
            assert find_samba() == Path("/usr/sbin/samba")
