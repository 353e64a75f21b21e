"""Is the directory configuration right? Asked once, at start, of the directory itself.

A wrong service-account password, a base DN that does not exist, a login attribute the
directory does not have or will not let the service account search: each used to start the
agent fine and answer every sign-in UNAVAILABLE or "no such user" (and the second is
remembered by the broker as a refusal). They are configuration errors, so the agent refuses to
start and says which setting, in one line. A directory that does not answer at all is another
matter: the agent starts, warns, and tries again for each sign-in, as it always did.

Checked, with the service account (or anonymously when none is set): that it binds; that
``base_dn`` exists and can be read; that the directory's schema has ``login_attribute`` (when
the schema can be read); that a search on it under ``base_dn`` is allowed. A search an ACL
silently limits (it answers no entries rather than an error) cannot be told from an empty
directory: that one stays unnoticed.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

import ldap3
import structlog
from ldap3.utils.conv import escape_filter_chars

from agent.ldap_threads import COMMUNICATION_ERRORS
from pta.errors import DirectoryUnavailable

if TYPE_CHECKING:
    from agent.config import DirectoryConfig
    from agent.directory import LdapDirectory

log = structlog.get_logger()
#: Result codes (RFC 4511).
INVALID_CREDENTIALS = 49
NO_SUCH_OBJECT = 32
INSUFFICIENT_ACCESS = 50
SIZE_LIMIT_EXCEEDED = 4
_NAMES = re.compile(r"NAME\s+(?:'([^']+)'|\(([^)]*)\))")


class ConfigurationError(Exception):
    """The configuration cannot work with this directory: ``message`` names the setting."""

    def __init__(self, message: str) -> None:
        """Keep the message: the one line the operator reads."""
        super().__init__(message)
        self.message = message


def _setting(name: str) -> str:
    """How a setting is named to the operator: its TOML key and its flag."""
    return f"{name} (--{name.replace('_', '-')})"


def check(directory: LdapDirectory) -> None:
    """Check one directory's configuration against the directory (blocking: run in a thread).

    Raises:
        ConfigurationError: When the directory answered and the configuration is wrong.
        DirectoryUnavailable: When no server of the directory answered.
    """
    config = directory.config
    where = config.urls[0] if len(config.urls) == 1 else " / ".join(config.urls)
    try:
        conn = directory.threads.open_connection(
            config.bind_dn or None, config.bind_password or None, simple=bool(config.bind_dn)
        )
    except COMMUNICATION_ERRORS as error:
        raise DirectoryUnavailable(f"no server of {where} answered: {error}") from None
    try:
        _check_bind(conn, config, where)
        _check_base(conn, config, where)
        _check_login_attribute(conn, config, where)
    except COMMUNICATION_ERRORS as error:
        raise DirectoryUnavailable(f"{where} stopped answering: {error}") from None
    finally:
        conn.unbind()


def _check_bind(conn: ldap3.Connection, config: DirectoryConfig, where: str) -> None:
    if conn.bind(read_server_info=False):
        return
    result = conn.result or {}
    code, description = result.get("result", -1), result.get("description", "refused")
    if not config.bind_dn:
        raise ConfigurationError(
            f"{where} refuses anonymous searches ({description}): set {_setting('bind_dn')} "
            f"and {_setting('bind_password_file')}"
        )
    if code == INVALID_CREDENTIALS:
        hint = ""
        if config.bind_password != config.bind_password.strip():
            hint = "; the password in the file begins or ends with a space"
        raise ConfigurationError(
            f"{_setting('bind_password_file')}: {where} refused the service account "
            f"{config.bind_dn!r} with this password ({description}){hint}"
        )
    raise ConfigurationError(
        f"{_setting('bind_dn')}: {where} refused the service account {config.bind_dn!r} "
        f"({description})"
    )


def _check_base(conn: ldap3.Connection, config: DirectoryConfig, where: str) -> None:
    conn.search(config.base_dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"])
    code = (conn.result or {}).get("result", -1)
    if code == NO_SUCH_OBJECT:
        raise ConfigurationError(
            f"{_setting('base_dn')}: {config.base_dn!r} does not exist in {where}"
        )
    if code != 0:
        description = (conn.result or {}).get("description", "refused")
        raise ConfigurationError(
            f"{_setting('base_dn')}: {where} does not let the service account read "
            f"{config.base_dn!r} ({description})"
        )


def _check_login_attribute(conn: ldap3.Connection, config: DirectoryConfig, where: str) -> None:
    attribute = config.login_attribute
    known = _attribute_names(conn)
    if known is not None and attribute.lower() not in known:
        raise ConfigurationError(
            f"{_setting('login_attribute')}: {where} has no attribute {attribute!r} in its schema"
        )
    nobody = escape_filter_chars(f"pta-preflight-{secrets.token_hex(8)}")
    conn.search(
        config.base_dn, f"({attribute}={nobody})", ldap3.SUBTREE, attributes=["1.1"], size_limit=1
    )
    code = (conn.result or {}).get("result", -1)
    if code not in (0, SIZE_LIMIT_EXCEEDED):
        description = (conn.result or {}).get("description", "refused")
        raise ConfigurationError(
            f"{_setting('login_attribute')}: {where} does not let the service account search "
            f"{attribute!r} under {config.base_dn!r} ({description})"
        )


def _attribute_names(conn: ldap3.Connection) -> set[str] | None:
    """Every attribute name (lower-cased) the directory's schema defines; None if unreadable."""
    conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["subschemaSubentry"])
    entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    values = entries[0]["attributes"].get("subschemaSubentry") if entries else None
    subschema = values[0] if isinstance(values, list) and values else values
    if not subschema:
        return None
    conn.search(str(subschema), "(objectClass=*)", ldap3.BASE, attributes=["attributeTypes"])
    entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    definitions = entries[0]["attributes"].get("attributeTypes", []) if entries else []
    names: set[str] = set()
    for definition in definitions:
        for single, several in _NAMES.findall(str(definition)):
            names.update(n.lower() for n in (single.split() or several.replace("'", " ").split()))
    return names or None
