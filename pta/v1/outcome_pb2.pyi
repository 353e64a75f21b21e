from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    SUCCESS: _ClassVar[Outcome]
    INVALID_CREDENTIALS: _ClassVar[Outcome]
    PASSWORD_EXPIRED: _ClassVar[Outcome]
    PASSWORD_MUST_CHANGE: _ClassVar[Outcome]
    ACCOUNT_LOCKED: _ClassVar[Outcome]
    ACCOUNT_DISABLED: _ClassVar[Outcome]
    ACCOUNT_EXPIRED: _ClassVar[Outcome]
    UNKNOWN_USER: _ClassVar[Outcome]
    DIRECTORY_UNAVAILABLE: _ClassVar[Outcome]
    ACCOUNT_RESTRICTED: _ClassVar[Outcome]
    REQUEST_REJECTED: _ClassVar[Outcome]
    PASSWORD_REJECTED: _ClassVar[Outcome]
    LOCKED_BY_POLICY: _ClassVar[Outcome]
    MFA_REQUIRED: _ClassVar[Outcome]
    MFA_NOT_ENROLLED: _ClassVar[Outcome]
    CHANGE_REFUSED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
SUCCESS: Outcome
INVALID_CREDENTIALS: Outcome
PASSWORD_EXPIRED: Outcome
PASSWORD_MUST_CHANGE: Outcome
ACCOUNT_LOCKED: Outcome
ACCOUNT_DISABLED: Outcome
ACCOUNT_EXPIRED: Outcome
UNKNOWN_USER: Outcome
DIRECTORY_UNAVAILABLE: Outcome
ACCOUNT_RESTRICTED: Outcome
REQUEST_REJECTED: Outcome
PASSWORD_REJECTED: Outcome
LOCKED_BY_POLICY: Outcome
MFA_REQUIRED: Outcome
MFA_NOT_ENROLLED: Outcome
CHANGE_REFUSED: Outcome
