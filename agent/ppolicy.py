"""OpenLDAP's password policy control on a user's bind: what to send, what came back, what it means.

OpenLDAP's ``ppolicy`` overlay (draft-behera-ldap-password-policy) only says *why* a bind failed,
or that a successful one must not count as a sign-in, inside a response control, and only when
the bind carried the request control. The result code alone cannot tell "locked" or "expired"
from a wrong password (all three are 49), and a password reset by an administrator even binds
with 0 success. This module owns that control: the request to send, a decoder for the reply, and
pure functions from it to the sign-in outcome and to a warning the user may be shown. No I/O;
``agent/directory.py`` does the bind and hands over ``conn.result["controls"]``.

The reply value, as the draft defines it (its ASN.1 module uses implicit tags; the ``warning``
CHOICE cannot be implicitly tagged, so its ``[0]`` is explicit, as slapd's bytes confirm)::

    PasswordPolicyResponseValue ::= SEQUENCE {
        warning [0] CHOICE {
            timeBeforeExpiration [0] INTEGER (0 .. maxInt),
            graceAuthNsRemaining [1] INTEGER (0 .. maxInt) } OPTIONAL,
        error   [1] ENUMERATED { passwordExpired (0), ... passwordInHistory (8) } OPTIONAL }
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import constraint, namedtype, namedval, tag, univ

from agent.outcomes import SUCCESS_CODE
from pta.v1 import outcome_pb2

__all__ = [
    "CONTROL_OID",
    "PolicyError",
    "PolicyResponse",
    "outcome",
    "parse_response",
    "request_control",
    "warning_message",
]

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome

#: The password policy control's OID, the same for the request and the response.
CONTROL_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
MAX_INT = 2**31 - 1  # RFC 4511's maxInt
_LOGGED_BYTES = 64  # a malformed value is logged in hex, cut to this length
_LOGGED_ERROR = 200  # pyasn1's messages repeat the whole schema

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


class PolicyError(enum.IntEnum):
    """The draft's ``error`` values, named in Python style (``passwordExpired`` → PASSWORD_EXPIRED).

    Only the first three can answer a bind; the others answer a password change.
    """

    PASSWORD_EXPIRED = 0
    ACCOUNT_LOCKED = 1
    CHANGE_AFTER_RESET = 2
    PASSWORD_MOD_NOT_ALLOWED = 3
    MUST_SUPPLY_OLD_PASSWORD = 4
    INSUFFICIENT_PASSWORD_QUALITY = 5
    PASSWORD_TOO_SHORT = 6
    PASSWORD_TOO_YOUNG = 7
    PASSWORD_IN_HISTORY = 8


@dataclass(frozen=True, slots=True)
class PolicyResponse:
    """A decoded password policy response control; every field is optional in the draft.

    Attributes:
        error: Why the directory refused (or restricted) the bind, if it said.
        seconds_before_expiration: The password still works but expires in this many seconds.
        grace_logins_remaining: The password has expired; this many more binds will succeed.
    """

    error: PolicyError | None = None
    seconds_before_expiration: int | None = None
    grace_logins_remaining: int | None = None


#: An empty SEQUENCE: the response slapd sends with every bind that has nothing to say.
EMPTY_VALUE = b"\x30\x00"
NO_POLICY = PolicyResponse()


def _context(number: int, *, constructed: bool = False) -> tag.Tag:
    form = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return tag.Tag(tag.tagClassContext, form, number)


# The schema is built from instances and explicit TagSets rather than pyasn1's usual subclasses
# with ``.subtype()``: the stubs leave ``subtype`` untyped, and the camelCase class attributes
# would each need a lint exception. An implicit tag replaces the universal one; an explicit tag
# is one more tag outside it (an untagged CHOICE has no tag of its own, hence ``()``).
def _counter(number: int) -> univ.Integer:
    """An ``[number] IMPLICIT INTEGER (0 .. maxInt)``: values out of range fail to decode."""
    return univ.Integer(
        tagSet=tag.TagSet(univ.Integer.tagSet.baseTag, _context(number)),
        subtypeSpec=constraint.ConstraintsIntersection(constraint.ValueRangeConstraint(0, MAX_INT)),
    )


_WARNING = univ.Choice(
    componentType=namedtype.NamedTypes(
        namedtype.NamedType("timeBeforeExpiration", _counter(0)),
        namedtype.NamedType("graceAuthNsRemaining", _counter(1)),
    ),
    tagSet=tag.TagSet((), _context(0, constructed=True)),
)
_ERROR = univ.Enumerated(
    tagSet=tag.TagSet(univ.Enumerated.tagSet.baseTag, _context(1)),
    # Numbers the draft does not define fail to decode rather than reaching PolicyError().
    subtypeSpec=constraint.ConstraintsIntersection(
        constraint.SingleValueConstraint(*(member.value for member in PolicyError))
    ),
    namedValues=namedval.NamedValues(*((member.name, member.value) for member in PolicyError)),
)
_RESPONSE_VALUE = univ.Sequence(
    componentType=namedtype.NamedTypes(
        namedtype.OptionalNamedType("warning", _WARNING),
        namedtype.OptionalNamedType("error", _ERROR),
    )
)


def request_control() -> tuple[str, bool, None]:
    """Return the request control to send with a user's bind, as ldap3's ``controls=`` takes it.

    Not critical: a directory without the overlay must still answer the bind. It has no value.

    Returns:
        ``(oid, criticality, value)``, the tuple form ldap3's ``build_controls_list`` accepts.
    """
    return (CONTROL_OID, False, None)


def _raw_value(controls: Mapping[str, object] | None) -> bytes | None:
    """Find the control's value: ldap3 puts ``{"value": bytes, ...}`` under the OID."""
    if not controls:
        return None
    entry = controls.get(CONTROL_OID)
    if isinstance(entry, Mapping):  # ldap3: {"description", "criticality", "value"}
        entry = entry.get("value")
    return bytes(entry) if isinstance(entry, bytes | bytearray) else None


def parse_response(controls: Mapping[str, object] | None) -> PolicyResponse | None:
    """Decode the password policy response control of a bind, if the directory sent one.

    Args:
        controls: ``conn.result.get("controls")`` from ldap3 (OID → ``{"value": bytes, ...}``);
            the raw value bytes directly under the OID are accepted too.

    Returns:
        The decoded response (all fields None for slapd's empty ``30 00``), or None when there
        is no such control or its value cannot be decoded. Never raises: a malformed value is
        logged at debug level and treated as absent, so the result code still decides.
    """
    raw = _raw_value(controls)
    if raw is None:
        if controls and CONTROL_OID in controls:
            log.debug("ppolicy.control_without_value")
        return None
    if raw == EMPTY_VALUE:  # What nearly every bind gets: skip pyasn1 (≈ 30 µs).
        return NO_POLICY
    try:
        value, rest = decoder.decode(raw, asn1Spec=_RESPONSE_VALUE)
        policy = _response(value)
    # pyasn1 raises PyAsn1Error subclasses; the others guard int() and PolicyError() in
    # _response, which the constraints above should already make unreachable.
    except (PyAsn1Error, ValueError, TypeError) as error:
        _log_malformed(raw, f"{type(error).__name__}: {error}")
        return None
    if rest:
        _log_malformed(raw, f"{len(rest)} bytes after the value")
        return None
    return policy


def _log_malformed(raw: bytes, reason: str) -> None:
    log.debug(
        "ppolicy.malformed_control",
        error=reason[:_LOGGED_ERROR],
        value=raw[:_LOGGED_BYTES].hex(),
    )


def _response(value: univ.Sequence) -> PolicyResponse:
    error = PolicyError(int(value["error"])) if value["error"].isValue else None
    warning = value["warning"]
    if not warning.isValue:
        return PolicyResponse(error=error)
    kind = warning.getName()
    number = int(warning.getComponent())
    if kind == "timeBeforeExpiration":
        return PolicyResponse(error=error, seconds_before_expiration=number)
    return PolicyResponse(error=error, grace_logins_remaining=number)


#: Errors that decide a bind's outcome whatever its result code (a failed bind, in practice).
_REFUSALS: dict[PolicyError, outcome_pb2.Outcome] = {
    PolicyError.PASSWORD_EXPIRED: Outcome.PASSWORD_EXPIRED,
    PolicyError.ACCOUNT_LOCKED: Outcome.ACCOUNT_LOCKED,
}


def outcome(result_code: int, policy: PolicyResponse | None) -> outcome_pb2.Outcome | None:
    """Map a bind's password policy response to an outcome, when it decides one.

    ``changeAfterReset`` comes with a *successful* bind: the password was right but an
    administrator reset it, so the user must change it before signing in. It counts only with
    result 0: slapd sends no error for a wrong password on such an account, and a failed bind
    must never look like a right password. ``passwordExpired`` and ``accountLocked`` come with
    49; should a server pair them with success, the refusal still wins (fail closed).

    Args:
        result_code: The LDAP result code of the bind.
        policy: What :func:`parse_response` made of the bind's controls.

    Returns:
        PASSWORD_EXPIRED, ACCOUNT_LOCKED or PASSWORD_MUST_CHANGE; None when the policy says
        nothing decisive, and the caller falls back to ``agent.outcomes.from_bind``.
    """
    if policy is None or policy.error is None:
        return None
    if policy.error is PolicyError.CHANGE_AFTER_RESET:
        return Outcome.PASSWORD_MUST_CHANGE if result_code == SUCCESS_CODE else None
    return _REFUSALS.get(policy.error)


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def warning_message(policy: PolicyResponse | None) -> str:
    """Say what the policy warns about, in words the user may be shown.

    The time is rounded down to its largest whole unit: "in 2 days" for 2 days 23 hours, so
    the warning never promises more time than is left.

    Args:
        policy: What :func:`parse_response` made of the bind's controls.

    Returns:
        "password expires in 3 days" (or hours, minutes, "less than a minute"),
        "2 grace logins left" ("no grace logins left" after the last one), or "" when the
        policy carries no warning.
    """
    if policy is None:
        return ""
    if policy.grace_logins_remaining is not None:
        left = policy.grace_logins_remaining
        return f"{_count(left, 'grace login') if left else 'no grace logins'} left"
    seconds = policy.seconds_before_expiration
    if seconds is None:
        return ""
    for size, unit in ((_DAY, "day"), (_HOUR, "hour"), (_MINUTE, "minute")):
        if seconds >= size:
            return f"password expires in {_count(seconds // size, unit)}"
    return "password expires in less than a minute"


#: Why the directory refused a new password, in words for the user.
REJECTION_REASONS: dict[PolicyError, str] = {
    PolicyError.PASSWORD_MOD_NOT_ALLOWED: "you may not change your password",
    PolicyError.MUST_SUPPLY_OLD_PASSWORD: "the old password is required",
    PolicyError.INSUFFICIENT_PASSWORD_QUALITY: "the new password is too simple",
    PolicyError.PASSWORD_TOO_SHORT: "the new password is too short",
    PolicyError.PASSWORD_TOO_YOUNG: "the password was changed too recently; try again later",
    PolicyError.PASSWORD_IN_HISTORY: "the new password was used before",
}


def rejection_reason(policy: PolicyResponse | None) -> str:
    """Say why a password change was refused, from the policy control; "" when it does not."""
    if policy is None or policy.error is None:
        return ""
    return REJECTION_REASONS.get(policy.error, "")
