from pta.v1 import outcome_pb2 as _outcome_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignInRequest(_message.Message):
    __slots__ = ("username", "password", "client_ip")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    client_ip: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., client_ip: _Optional[str] = ...) -> None: ...

class SignInResponse(_message.Message):
    __slots__ = ("outcome", "request_id", "message", "token", "token_expires_at", "mfa_challenge_id", "mfa_expires_in_seconds", "retry_after_seconds")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MFA_CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    MFA_EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    outcome: _outcome_pb2.Outcome
    request_id: str
    message: str
    token: str
    token_expires_at: int
    mfa_challenge_id: str
    mfa_expires_in_seconds: int
    retry_after_seconds: int
    def __init__(self, outcome: _Optional[_Union[_outcome_pb2.Outcome, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., token: _Optional[str] = ..., token_expires_at: _Optional[int] = ..., mfa_challenge_id: _Optional[str] = ..., mfa_expires_in_seconds: _Optional[int] = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...

class SignInBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SignInItem]
    def __init__(self, items: _Optional[_Iterable[_Union[SignInItem, _Mapping]]] = ...) -> None: ...

class SignInItem(_message.Message):
    __slots__ = ("id", "request", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: SignInRequest
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[SignInRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SignInAnswers(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[SignInAnswer]
    def __init__(self, answers: _Optional[_Iterable[_Union[SignInAnswer, _Mapping]]] = ...) -> None: ...

class SignInAnswer(_message.Message):
    __slots__ = ("id", "response", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: SignInResponse
    status: Status
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[SignInResponse, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CompleteMfaRequest(_message.Message):
    __slots__ = ("challenge_id", "code", "client_ip")
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    challenge_id: str
    code: str
    client_ip: str
    def __init__(self, challenge_id: _Optional[str] = ..., code: _Optional[str] = ..., client_ip: _Optional[str] = ...) -> None: ...

class GetSigningKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSigningKeysResponse(_message.Message):
    __slots__ = ("jwks_json", "issuer")
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    issuer: str
    def __init__(self, jwks_json: _Optional[str] = ..., issuer: _Optional[str] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("username", "old_password", "new_password", "client_ip", "mfa_code")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    OLD_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    MFA_CODE_FIELD_NUMBER: _ClassVar[int]
    username: str
    old_password: str
    new_password: str
    client_ip: str
    mfa_code: str
    def __init__(self, username: _Optional[str] = ..., old_password: _Optional[str] = ..., new_password: _Optional[str] = ..., client_ip: _Optional[str] = ..., mfa_code: _Optional[str] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ("outcome", "request_id", "message", "retry_after_seconds")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    outcome: _outcome_pb2.Outcome
    request_id: str
    message: str
    retry_after_seconds: int
    def __init__(self, outcome: _Optional[_Union[_outcome_pb2.Outcome, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...
