"""Where a store is, as an operator names it: a PostgreSQL URL, shown without its password.

``--store postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE`` (or ``PTA_STORE``) names the store
several brokers share; without it, each broker keeps an SQLite store in its data directory. A
URL may carry a password, in its user part or as ``?password=``: nothing prints, logs or raises
the URL itself, only :func:`redact`'s rendering of it. Knows no SQL and imports no driver, so
the configuration and the CLI can check and show a URL without opening anything.
"""

from __future__ import annotations

import re

__all__ = ["SCHEMES", "check_url", "redact"]

#: What libpq accepts as a URL; a key=value conninfo string is not taken (it is easier to
#: leak, and nothing here needs it).
SCHEMES = ("postgresql://", "postgres://")
HIDDEN = "***"
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def check_url(url: str) -> str:
    """Return ``url`` if it names a PostgreSQL database by URL.

    Raises:
        ValueError: When it does not; the message does not repeat what was given (it may be a
            conninfo string holding a password).
    """
    if not url.startswith(SCHEMES):
        raise ValueError("--store (or PTA_STORE) takes a postgresql://USER@HOST:PORT/DATABASE URL")
    return url


def redact(url: str) -> str:
    """The URL as it may be shown: any password replaced by ``***``.

    Both places libpq reads a password from are covered: ``user:password@`` and the
    ``password`` query parameter. Text that is not a URL is not shown at all.
    """
    if not url.startswith(SCHEMES):
        return "(not a postgresql:// URL)"
    scheme, _, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.partition(':')[0]}:{HIDDEN}"
    path, question, query = tail.partition("?")
    if question:
        query = _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", query)
    return f"{scheme}://{userinfo}{at}{hosts}{path}{question}{query}"
