"""The bytes of an LDAP simple bind request, encoded by hand: the agent's one hot message.

ldap3 builds every request as a tree of pyasn1 objects and encodes it with pyasn1's generic
BER encoder: ≈ 0.17 ms of CPU for a bind with the password policy control, most of what a
sign-in costs the agent's directory side. A simple bind is one fixed shape (RFC 4511 §4.2), so
it is written here directly, byte for byte what ldap3 would send (a test compares the two).
Only the encoding is ours (and where one message ends, to read answers off a stream): the
answer's decoding stays ldap3's (``agent/ldappool.py``). No I/O here, and no ldap3 import.

::

    LDAPMessage ::= SEQUENCE {
        messageID   INTEGER (0 .. maxInt),
        protocolOp  BindRequest ::= [APPLICATION 0] SEQUENCE {
                        version         INTEGER (1 .. 127),
                        name            LDAPDN,
                        authentication  simple [0] OCTET STRING },
        controls    [0] Controls OPTIONAL }
    Control ::= SEQUENCE { controlType LDAPOID, criticality BOOLEAN DEFAULT FALSE,
                           controlValue OCTET STRING OPTIONAL }
"""

from __future__ import annotations

from ldap3.protocol.sasl.sasl import validate_simple_password

__all__ = [
    "bind_request",
    "control",
    "message_size",
    "sasl_prepped",
    "search_request",
    "start_tls_request",
]

MAX_INT = 2**31 - 1  # RFC 4511's maxInt: the largest message id
LDAP_VERSION = 3
_SEQUENCE = 0x30
_INTEGER = 0x02
_BOOLEAN = 0x01
_OCTET_STRING = 0x04
_BIND_REQUEST = 0x60  # [APPLICATION 0], constructed
_SIMPLE = 0x80  # [0], primitive
_CONTROLS = 0xA0  # [0], constructed
_EXTENDED_REQUEST = 0x77  # [APPLICATION 23], constructed
_SEARCH_REQUEST = 0x63  # [APPLICATION 3], constructed
_ENUMERATED = 0x0A
_EQUALITY_MATCH = 0xA3  # Filter's [3] AttributeValueAssertion, constructed
SUBTREE = 2  # SearchRequest.scope wholeSubtree
DEREF_ALWAYS = 3  # SearchRequest.derefAliases derefAlways (ldap3's default)
NO_ATTRIBUTES = "1.1"  # RFC 4511 §4.5.1.8: return no attributes
_REQUEST_NAME = 0x80  # [0], primitive
START_TLS_OID = "1.3.6.1.4.1.1466.20037"
_SHORT_LENGTH = 0x80  # lengths below this take one byte


def _length(size: int) -> bytes:
    """BER definite length: short form below 128, else 0x80 | count, then the bytes."""
    if size < _SHORT_LENGTH:
        return bytes((size,))
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((_SHORT_LENGTH | len(raw),)) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def _integer(value: int) -> bytes:
    """A non-negative INTEGER, two's complement, minimal (a leading 0 when the top bit is set)."""
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def control(oid: str, *, critical: bool = False, value: bytes | None = None) -> bytes:
    """Encode one request control, once, for :func:`bind_request` to carry.

    Criticality is written only when TRUE (FALSE is the DEFAULT), as ldap3 does; the bytes
    are the same as ldap3's.
    """
    body = _tlv(_OCTET_STRING, oid.encode("ascii"))
    if critical:
        body += _tlv(_BOOLEAN, b"\x01")  # ldap3 (pyasn1) writes TRUE as 1
    if value is not None:
        body += _tlv(_OCTET_STRING, value)
    return _tlv(_SEQUENCE, body)


def bind_request(message_id: int, dn: str, password: bytes, controls: tuple[bytes, ...]) -> bytes:
    """Encode a simple bind of ``dn`` with ``password`` (already SASLprepped, as ldap3 does).

    Args:
        message_id: The connection's next message id (1 .. maxInt).
        dn: The DN to bind as.
        password: The password's bytes; never empty (an empty one is an anonymous bind).
        controls: Request controls made by :func:`control`.

    Returns:
        The whole LDAPMessage, ready for the socket.

    Raises:
        ValueError: For a message id out of range or an empty password.
    """
    if not 0 < message_id <= MAX_INT:
        raise ValueError("message id out of range")
    if not password:
        raise ValueError("a simple bind needs a password")
    bind = _tlv(
        _BIND_REQUEST,
        _integer(LDAP_VERSION) + _tlv(_OCTET_STRING, dn.encode()) + _tlv(_SIMPLE, password),
    )
    body = _integer(message_id) + bind
    if controls:
        body += _tlv(_CONTROLS, b"".join(controls))
    return _tlv(_SEQUENCE, body)


def start_tls_request(message_id: int) -> bytes:
    """Encode the StartTLS extended request (RFC 4511 §4.14): a name and no value."""
    if not 0 < message_id <= MAX_INT:
        raise ValueError("message id out of range")
    request = _tlv(_EXTENDED_REQUEST, _tlv(_REQUEST_NAME, START_TLS_OID.encode("ascii")))
    return _tlv(_SEQUENCE, _integer(message_id) + request)


def message_size(data: bytes | bytearray) -> int:
    """How many bytes the LDAPMessage at the start of ``data`` takes; -1 until that is known.

    Reads the SEQUENCE tag and its definite length (short form, or up to four length bytes:
    LDAP never needs more). A stream that starts any other way is not LDAP.

    Raises:
        ValueError: For something that is not an LDAPMessage's start.
    """
    if len(data) < 2:  # noqa: PLR2004 - a tag byte and a length byte
        return -1
    if data[0] != _SEQUENCE:
        raise ValueError("not an LDAP message")
    first = data[1]
    if first < _SHORT_LENGTH:
        return 2 + first
    count = first & 0x7F
    if not 0 < count <= 4:  # noqa: PLR2004 - 0x80 is BER's indefinite length, never LDAP's
        raise ValueError("not an LDAP message length")
    if len(data) < 2 + count:
        return -1
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def search_request(  # noqa: PLR0913 - the request's fields, by name
    message_id: int,
    base_dn: str,
    attribute: str,
    value: str,
    *,
    size_limit: int,
    scope: int = SUBTREE,
) -> bytes:
    """Encode a search for entries whose ``attribute`` equals ``value``, asking for no attributes.

    The filter is an ``equalityMatch`` whose assertion value is the raw bytes of ``value``:
    nothing in it is parsed as filter syntax, so no escaping is needed and none can be missed
    (ldap3 escapes a filter string, then parses it back to the same bytes; a test compares).
    Dereferences aliases always, as ldap3 does by default.
    """
    if not 0 < message_id <= MAX_INT:
        raise ValueError("message id out of range")
    match = _tlv(_OCTET_STRING, attribute.encode()) + _tlv(_OCTET_STRING, value.encode())
    search = (
        _tlv(_OCTET_STRING, base_dn.encode())
        + _tlv(_ENUMERATED, bytes((scope,)))
        + _tlv(_ENUMERATED, bytes((DEREF_ALWAYS,)))
        + _integer(size_limit)
        + _integer(0)  # timeLimit: the server's own
        + _tlv(_BOOLEAN, b"\x00")  # typesOnly FALSE
        + _tlv(_EQUALITY_MATCH, match)
        + _tlv(_SEQUENCE, _tlv(_OCTET_STRING, NO_ATTRIBUTES.encode("ascii")))
    )
    return _tlv(_SEQUENCE, _integer(message_id) + _tlv(_SEARCH_REQUEST, search))


def sasl_prepped(password: str) -> bytes:
    """The password's bytes after SASLprep (RFC 4013), as ldap3 prepares a simple bind's.

    Printable ASCII is its own SASLprep (nothing to map, NFKC leaves it alone, nothing in it
    is prohibited or bidirectional) and most passwords are just that: they skip ldap3's
    character-by-character table checks (≈ 30 µs a sign-in). A test holds the two equal.

    Raises:
        LDAPException: For a password SASLprep refuses (ldap3's error, as before).
    """
    if password.isascii() and password.isprintable():
        return password.encode("ascii")
    prepared: bytes = validate_simple_password(password)
    return prepared
