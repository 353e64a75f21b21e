"""The hand-encoded requests (``agent/ldapwire.py``) are, byte for byte, what ldap3 sends.

The reference is ldap3's own path: ``bind_operation`` and its controls built into an
``LDAPMessage`` and encoded by pyasn1, with the password through ldap3's SASLprep. That the
agent's binds also work against a real directory is shown by every sign-in test.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from ldap3.core.exceptions import LDAPException
from ldap3.operation.bind import bind_operation
from ldap3.operation.extended import extended_operation
from ldap3.operation.search import search_operation
from ldap3.protocol.convert import build_controls_list
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.conv import escape_filter_chars
from pyasn1.codec.ber import encoder

from agent import ldapwire, ppolicy
from agent.ldapwire import sasl_prepped

OID = ppolicy.CONTROL_OID
Controls = list[tuple[str, bool, str | bytes | None]]


def _ldap3_bytes(message_id: int, dn: str, password: str, controls: Controls) -> bytes:
    request = bind_operation(3, "SIMPLE", dn, password)
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("bindRequest", request)
    built = build_controls_list(list(controls) or None)
    if built is not None:
        message["controls"] = built
    return bytes(encoder.encode(message))


def _ours(message_id: int, dn: str, password: str, controls: Controls) -> bytes:
    return ldapwire.bind_request(
        message_id,
        dn,
        validate_simple_password(password),
        tuple(
            ldapwire.control(o, critical=c, value=v.encode() if isinstance(v, str) else v)
            for o, c, v in controls
        ),
    )


class TestBindRequest:
    """Same bytes as ldap3 for every message id, name, password and control."""

    @pytest.mark.parametrize("message_id", [1, 127, 128, 255, 256, 65_535, 2**31 - 1])
    @pytest.mark.parametrize(
        "dn",
        ["uid=a,dc=x", "cn=Zoë Ünïcode,ou=people,dc=example,dc=com", "cn=" + "x" * 300],
        ids=["short", "unicode", "long"],
    )
    @pytest.mark.parametrize(
        "controls",
        [
            [],
            [(OID, False, None)],
            [(OID, True, b"abc")],
            [(OID, False, None), ("1.2.3", True, b"")],
        ],
        ids=["none", "ppolicy", "critical-with-value", "two"],
    )
    def test_same_as_ldap3(self, message_id: int, dn: str, controls: Controls) -> None:
        """Short and long lengths, non-ASCII names, controls with and without values."""
        for password in ("p", "pässwörd" * 40):
            assert _ours(message_id, dn, password, controls) == _ldap3_bytes(
                message_id, dn, password, controls
            )

    def test_very_long_name(self) -> None:
        """Lengths that need three length bytes."""
        dn = "cn=" + "y" * 70_000
        controls: Controls = [(OID, False, None)]
        assert _ours(7, dn, "secret", controls) == _ldap3_bytes(7, dn, "secret", controls)

    @given(
        message_id=st.integers(1, 2**31 - 1),
        dn=st.text(min_size=1, max_size=300),
        password=st.text(
            # SASLprep refuses some characters (ldap3 raises for them either way).
            alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]),
            min_size=1,
            max_size=100,
        ),
    )
    def test_same_as_ldap3_for_any_input(self, message_id: int, dn: str, password: str) -> None:
        """Property: any id, any name, any password that SASLprep accepts."""
        try:
            expected = _ldap3_bytes(message_id, dn, password, [(OID, False, None)])
        except Exception:  # noqa: BLE001 - ldap3 refused the input: nothing to compare
            return
        assert _ours(message_id, dn, password, [(OID, False, None)]) == expected

    @pytest.mark.parametrize("message_id", [0, -1, 2**31])
    def test_message_id_out_of_range(self, message_id: int) -> None:
        """RFC 4511's message ids are 1 .. maxInt for requests."""
        with pytest.raises(ValueError, match="message id"):
            ldapwire.bind_request(message_id, "cn=a", b"pw", ())

    def test_empty_password_refused(self) -> None:
        """An empty simple password is an anonymous bind: never sent for a sign-in."""
        with pytest.raises(ValueError, match="password"):
            ldapwire.bind_request(1, "cn=a", b"", ())


class TestStartTls:
    """The StartTLS extended request, as ldap3's ``extended`` operation encodes it."""

    @pytest.mark.parametrize("message_id", [1, 200, 2**31 - 1])
    def test_same_as_ldap3(self, message_id: int) -> None:
        """Same bytes as ldap3's ExtendedRequest with the StartTLS name and no value."""
        message = LDAPMessage()
        message["messageID"] = MessageID(message_id)
        message["protocolOp"] = ProtocolOp().setComponentByName(
            "extendedReq", extended_operation(ldapwire.START_TLS_OID)
        )
        assert ldapwire.start_tls_request(message_id) == bytes(encoder.encode(message))


class TestMessageSize:
    """Where an LDAPMessage ends, from its first bytes; -1 while that is not known yet."""

    @pytest.mark.parametrize("size", [0, 5, 127, 128, 300, 70_000])
    def test_whole_messages(self, size: int) -> None:
        """Short and long length forms: the size of ldap3's own encoding."""
        raw = _ldap3_bytes(3, "cn=" + "x" * size, "pw", [(OID, False, None)])
        assert ldapwire.message_size(raw) == len(raw)
        assert ldapwire.message_size(raw + b"\x30\x00") == len(raw)  # The next one's start.
        header = 2 + (raw[1] & 0x7F if raw[1] & 0x80 else 0)
        for cut in range(header):
            assert ldapwire.message_size(raw[:cut]) == -1

    @pytest.mark.parametrize(
        "start", [b"HTTP/1.1", b"\x30\x80\x00", b"\x30\x85\x01\x02\x03\x04\x05"]
    )
    def test_not_ldap(self, start: bytes) -> None:
        """Another protocol, BER's indefinite length, a length LDAP never needs."""
        with pytest.raises(ValueError, match="LDAP"):
            ldapwire.message_size(start)


class TestSaslPrep:
    """The agent's SASLprep shortcut for printable ASCII changes nothing ldap3 would send."""

    @given(password=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
    def test_printable_ascii_as_ldap3(self, password: str) -> None:
        """Property: every printable ASCII password gets exactly ldap3's bytes."""
        if password:
            assert sasl_prepped(password) == validate_simple_password(password)

    @pytest.mark.parametrize("password", ["pässwörd", "a\u00a0b", "soft\u00adhyphen", "ﬁ"])
    def test_others_through_ldap3(self, password: str) -> None:
        """Non-ASCII passwords are mapped and normalised by ldap3 itself."""
        assert sasl_prepped(password) == validate_simple_password(password)

    def test_control_characters_refused(self) -> None:
        """ASCII control characters are prohibited by SASLprep: ldap3 refuses them."""
        with pytest.raises(LDAPException):
            sasl_prepped("tab\there")


def _ldap3_search(message_id: int, base: str, attribute: str, value: str) -> bytes:
    request = search_operation(
        search_base=base,
        search_filter=f"({attribute}={escape_filter_chars(value)})",
        search_scope=2,
        dereference_aliases=3,
        attributes=["1.1"],
        size_limit=2,
        time_limit=0,
        types_only=False,
        auto_escape=True,
        auto_encode=True,
    )
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchRequest", request)
    return bytes(encoder.encode(message))


class TestSearchRequest:
    """The login search: ldap3's bytes for an escaped filter string, without the string."""

    @pytest.mark.parametrize(
        "value", ["alice", "a*b(c)\\d", "zoë@example.com", "x" * 300, "nul\x00here"]
    )
    def test_same_as_ldap3(self, value: str) -> None:
        """Filter syntax, non-ASCII and long values: ldap3 escapes then unescapes them."""
        ours = ldapwire.search_request(9, "ou=people,dc=example,dc=com", "uid", value, size_limit=2)
        assert ours == _ldap3_search(9, "ou=people,dc=example,dc=com", "uid", value)

    @given(
        message_id=st.integers(1, 2**31 - 1),
        value=st.text(min_size=1, max_size=200),
        attribute=st.sampled_from(["uid", "userPrincipalName", "sAMAccountName", "mail"]),
    )
    def test_same_as_ldap3_for_any_value(self, message_id: int, value: str, attribute: str) -> None:
        """Property: any id, any login value (escaping is ldap3's, the bytes are equal).

        Except spaces around the value, which ldap3's filter parser strips and we send as they
        are: directories ignore them when matching names (RFC 4518's insignificant spaces).
        """
        assume(value.strip() == value)
        ours = ldapwire.search_request(message_id, "dc=x", attribute, value, size_limit=2)
        assert ours == _ldap3_search(message_id, "dc=x", attribute, value)
