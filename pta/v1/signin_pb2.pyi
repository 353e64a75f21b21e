from pta.v1 import outcome_pb2 as _outcome_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
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
    __slots__ = ("outcome", "request_id", "message")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: _outcome_pb2.Outcome
    request_id: str
    message: str
    def __init__(self, outcome: _Optional[_Union[_outcome_pb2.Outcome, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("username", "old_password", "new_password", "client_ip")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    OLD_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    username: str
    old_password: str
    new_password: str
    client_ip: str
    def __init__(self, username: _Optional[str] = ..., old_password: _Optional[str] = ..., new_password: _Optional[str] = ..., client_ip: _Optional[str] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ("outcome", "request_id", "message")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: _outcome_pb2.Outcome
    request_id: str
    message: str
    def __init__(self, outcome: _Optional[_Union[_outcome_pb2.Outcome, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
