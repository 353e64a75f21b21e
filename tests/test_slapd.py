"""Tests for the throwaway slapd: the demo, the suite and the benchmark rely on it.

They run a real slapd, so they need Debian's ``slapd`` (and ``ldap-utils`` for
the ppolicy messages); a missing binary fails loudly rather than skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import TYPE_CHECKING

import ldap3
import pytest

from tests.secrets_registry import secret
from tooling.slapd import DirectoryUser, Slapd, find_slapd

if TYPE_CHECKING:
    from collections.abc import Iterator

ALICE = DirectoryUser(
    uid="alice", password=secret("alice-secret"), given_name="Alice", surname="Doe"
)
ODD = DirectoryUser(uid="o'brien+x,y", password=secret("p@ss:w ord"))
INVALID_CREDENTIALS = 49


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    """One server with two users, shared by the read-only tests of this module."""
    with Slapd(users=[ALICE, ODD]) as server:
        yield server


def bind(server: Slapd, dn: str, password: str) -> ldap3.Connection:
    """Simple-bind a fresh connection and return it, bound or not."""
    conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), dn, password)
    conn.bind()
    return conn


def test_good_password_binds(slapd: Slapd) -> None:
    """A user's own password binds, and the server says who is bound."""
    conn = bind(slapd, slapd.user_dn("alice"), ALICE.password)
    assert conn.bound
    assert conn.extend.standard.who_am_i() == f"dn:{slapd.user_dn('alice')}"
    conn.unbind()


def test_wrong_password_is_invalid_credentials(slapd: Slapd) -> None:
    """A wrong password fails with invalidCredentials (49), not another error."""
    conn = bind(slapd, slapd.user_dn("alice"), secret("not-her-password"))
    assert not conn.bound
    assert conn.result["result"] == INVALID_CREDENTIALS
    assert conn.result["description"] == "invalidCredentials"


def test_special_characters_in_uid(slapd: Slapd) -> None:
    """A uid with quote, plus and comma is escaped in its DN, stored verbatim, and binds."""
    conn = bind(slapd, slapd.user_dn(ODD.uid), ODD.password)
    assert conn.bound
    assert conn.search(slapd.people_dn, "(uid=o'brien\\2bx\\2cy)", attributes=["uid", "cn"])
    assert conn.entries[0].uid.value == ODD.uid
    assert conn.entries[0].cn.value == ODD.uid
    conn.unbind()


def test_password_is_not_readable_anonymously(slapd: Slapd) -> None:
    """Anyone may read a user, but not the password hash."""
    conn = ldap3.Connection(ldap3.Server(slapd.url, get_info=ldap3.NONE), auto_bind=True)
    conn.search(slapd.user_dn("alice"), "(objectClass=*)", ldap3.BASE, attributes=["*"])
    attrs = conn.entries[0].entry_attributes_as_dict
    assert attrs["cn"] == ["Alice Doe"]
    assert "userPassword" not in attrs
    conn.unbind()


def test_stop_leaves_no_process_and_no_directory() -> None:
    """stop() kills slapd, frees its port, removes its directory, and may be repeated."""
    server = Slapd(users=[ALICE])
    server.start()
    directory, port = server.directory, server.port
    assert directory is not None
    pid = int((directory / "slapd.pid").read_text())
    server.stop()
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()
    assert server.url == ""


@pytest.mark.skipif(shutil.which("ldapwhoami") is None, reason="needs ldap-utils")
@pytest.mark.parametrize(
    ("user", "code", "message"),
    [
        (DirectoryUser(uid="locked", password=secret("pw"), locked=True), 49, "Account locked"),
        (DirectoryUser(uid="reset", password=secret("pw"), must_change=True), 0, "must be changed"),
        (DirectoryUser(uid="old", password=secret("pw"), expired=True), 49, "Password expired"),
    ],
)
def test_ppolicy_states(user: DirectoryUser, code: int, message: str) -> None:
    """Each ppolicy flag yields the answer a real, policed account would give."""
    with Slapd(users=[user]) as server:
        argv = ["ldapwhoami", "-x", "-H", server.url, "-e", "ppolicy"]
        argv += ["-D", server.user_dn(user.uid), "-w", user.password]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    assert done.returncode == code
    assert message in done.stderr


def test_find_slapd_finds_the_installed_binary() -> None:
    """The Debian binary is found where the package puts it."""
    assert find_slapd().name == "slapd"
