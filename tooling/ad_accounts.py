"""Active Directory accounts as LDIF: the states a test user can be in, and how AD stores them.

Used by :mod:`tooling.samba` to create users and put them in a state (disabled, must change,
expired …) straight in Samba's database; pure text, no process and no network.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from collections.abc import Sequence

AdState = Literal[
    "normal", "disabled", "must_change", "expired", "account_expired", "locked", "logon_hours"
]

AD_STATES: tuple[AdState, ...] = get_args(AdState)
_NORMAL_ACCOUNT, _DISABLED_ACCOUNT = "512", "514"  # userAccountControl, ACCOUNTDISABLE = 2
_NEVER = "9223372036854775807"  # accountExpires: never
_LONG_AGO = "125911584000000000"  # 2000-01-01 as FILETIME: beyond any maximum password age
_FILETIME_EPOCH = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
_DAY = 86_400 * 10**7  # in FILETIME's 100 ns units
_HOURS = 21  # logonHours: one bit per hour of the week
_SAM_MAX = 20  # sAMAccountName length limit
_SAM_FORBIDDEN = set('"/\\[]:;|=,+*?<>@')


@dataclass(frozen=True, slots=True, kw_only=True)
class AdUser:
    """One user account created in the domain at start, in one account state.

    Attributes:
        sam: ``sAMAccountName`` and CN; the UPN is ``sam@upn_suffix``.
        password: Clear-text password; any length (the policy is bypassed at creation).
        state: Account state; its bind answer is in the module docstring.
        mail: Optional ``mail``.

    """

    sam: str
    password: str = field(repr=False)
    state: AdState = "normal"
    mail: str | None = None

    def __post_init__(self) -> None:
        """Reject what AD would: a sAMAccountName is at most 20 characters, some forbidden."""
        if not self.sam.strip() or len(self.sam) > _SAM_MAX or _SAM_FORBIDDEN & set(self.sam):
            msg = f"invalid sAMAccountName {self.sam!r}"
            raise ValueError(msg)
        if not self.password:
            msg = "AdUser.password must not be empty"
            raise ValueError(msg)
        if self.state not in AD_STATES:
            msg = f"unknown state {self.state!r}"
            raise ValueError(msg)


def filetime() -> int:
    """Now, as AD stores times: 100 ns units since 1601-01-01."""
    return int((time.time() + _FILETIME_EPOCH) * 10**7)


def state_changes(state: AdState, now: int) -> list[tuple[str, str | bytes]]:
    """Every attribute an account state depends on, so a new state also clears the old one."""
    return [
        ("userAccountControl", _DISABLED_ACCOUNT if state == "disabled" else _NORMAL_ACCOUNT),
        ("pwdLastSet", {"must_change": "0", "expired": _LONG_AGO}.get(state, str(now))),
        ("accountExpires", str(now - _DAY) if state == "account_expired" else _NEVER),
        ("lockoutTime", str(now) if state == "locked" else "0"),
        ("logonHours", bytes(_HOURS) if state == "logon_hours" else b"\xff" * _HOURS),
    ]


def unicode_pwd(password: str) -> tuple[str, bytes]:
    """``unicodePwd``: the password in double quotes, UTF-16-LE, as AD requires."""
    return "unicodePwd", f'"{password}"'.encode("utf-16-le")


def ldif_line(name: str, value: str | bytes) -> str:
    """Render one LDIF line; bytes and anything not plain ASCII go base64 (RFC 2849)."""
    if isinstance(value, str) and re.fullmatch(r"[!-9;=?-~][ -~]*(?<! )", value):
        return f"{name}: {value}\n"
    raw = value.encode() if isinstance(value, str) else value
    return f"{name}:: {base64.b64encode(raw).decode('ascii')}\n"


def ldif_record(dn: str, changetype: str, lines: Sequence[tuple[str, str | bytes]]) -> str:
    """An LDIF record of ``changetype`` (``add``) with one line per attribute value."""
    body = "".join(ldif_line(name, value) for name, value in lines)
    return f"{ldif_line('dn', dn)}changetype: {changetype}\n{body}\n"


def ldif_modify(dn: str, changes: Sequence[tuple[str, str | bytes]]) -> str:
    """An LDIF modify replacing each attribute with one value."""
    body = "".join(f"replace: {n}\n{ldif_line(n, v)}-\n" for n, v in changes)
    return f"{ldif_line('dn', dn)}changetype: modify\n{body}\n"
