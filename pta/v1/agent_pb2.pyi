from pta.v1 import outcome_pb2 as _outcome_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoginScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOGIN_SCOPE_UNSPECIFIED: _ClassVar[LoginScope]
    LOGIN_SCOPE_FULL_NAME: _ClassVar[LoginScope]
    LOGIN_SCOPE_LOCAL_PART: _ClassVar[LoginScope]
LOGIN_SCOPE_UNSPECIFIED: LoginScope
LOGIN_SCOPE_FULL_NAME: LoginScope
LOGIN_SCOPE_LOCAL_PART: LoginScope

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem", "envelope_public_key", "hostname", "version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: str
    envelope_public_key: bytes
    hostname: str
    version: str
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[str] = ..., envelope_public_key: _Optional[bytes] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem", "envelope_public_key")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    envelope_public_key: bytes
    def __init__(self, csr_pem: _Optional[str] = ..., envelope_public_key: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_chain_pem")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: str
    ca_chain_pem: str
    def __init__(self, certificate_pem: _Optional[str] = ..., ca_chain_pem: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("agent_id", "tenant", "certificate_pem", "ca_chain_pem", "domains", "agent_endpoint", "agent_port")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    AGENT_PORT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tenant: str
    certificate_pem: str
    ca_chain_pem: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    agent_endpoint: str
    agent_port: int
    def __init__(self, agent_id: _Optional[str] = ..., tenant: _Optional[str] = ..., certificate_pem: _Optional[str] = ..., ca_chain_pem: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., agent_endpoint: _Optional[str] = ..., agent_port: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "results", "heartbeat", "draining", "acks", "directory_report", "health")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_REPORT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    results: Results
    heartbeat: Heartbeat
    draining: Draining
    acks: Acks
    directory_report: DirectoryReport
    health: Health
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., results: _Optional[_Union[Results, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., draining: _Optional[_Union[Draining, _Mapping]] = ..., acks: _Optional[_Union[Acks, _Mapping]] = ..., directory_report: _Optional[_Union[DirectoryReport, _Mapping]] = ..., health: _Optional[_Union[Health, _Mapping]] = ...) -> None: ...

class BrokerMessage(_message.Message):
    __slots__ = ("welcome", "validations", "heartbeat", "drain", "brokers")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    VALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    validations: Validations
    heartbeat: Heartbeat
    drain: Drain
    brokers: Brokers
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., validations: _Optional[_Union[Validations, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., brokers: _Optional[_Union[Brokers, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "version", "domains", "max_in_flight", "directories")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    max_in_flight: int
    directories: _containers.RepeatedCompositeFieldContainer[DirectoryAccounts]
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., max_in_flight: _Optional[int] = ..., directories: _Optional[_Iterable[_Union[DirectoryAccounts, _Mapping]]] = ...) -> None: ...

class DirectoryAccounts(_message.Message):
    __slots__ = ("domains", "directory_id", "login_scope", "settings_digest")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedScalarFieldContainer[str]
    directory_id: str
    login_scope: LoginScope
    settings_digest: bytes
    def __init__(self, domains: _Optional[_Iterable[str]] = ..., directory_id: _Optional[str] = ..., login_scope: _Optional[_Union[LoginScope, str]] = ..., settings_digest: _Optional[bytes] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("tenant", "domains", "heartbeat_interval_ms", "acks_in_results", "lost_requests_counted", "brokers")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ACKS_IN_RESULTS_FIELD_NUMBER: _ClassVar[int]
    LOST_REQUESTS_COUNTED_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_interval_ms: int
    acks_in_results: bool
    lost_requests_counted: bool
    brokers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., heartbeat_interval_ms: _Optional[int] = ..., acks_in_results: _Optional[bool] = ..., lost_requests_counted: _Optional[bool] = ..., brokers: _Optional[_Iterable[str]] = ...) -> None: ...

class Brokers(_message.Message):
    __slots__ = ("agent_endpoints",)
    AGENT_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    agent_endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class Validations(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ValidationRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ValidationRequest, _Mapping]]] = ...) -> None: ...

class ValidationRequest(_message.Message):
    __slots__ = ("request_id", "envelope", "deadline_unix_ms", "domain")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    envelope: bytes
    deadline_unix_ms: int
    domain: str
    def __init__(self, request_id: _Optional[str] = ..., envelope: _Optional[bytes] = ..., deadline_unix_ms: _Optional[int] = ..., domain: _Optional[str] = ...) -> None: ...

class Credentials(_message.Message):
    __slots__ = ("username", "password", "new_password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    new_password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class Acks(_message.Message):
    __slots__ = ("request_ids",)
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Results(_message.Message):
    __slots__ = ("results", "acks")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ValidationResult]
    acks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[ValidationResult, _Mapping]]] = ..., acks: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidationResult(_message.Message):
    __slots__ = ("request_id", "outcome", "message", "directory_us")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_US_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outcome: _outcome_pb2.Outcome
    message: str
    directory_us: int
    def __init__(self, request_id: _Optional[str] = ..., outcome: _Optional[_Union[_outcome_pb2.Outcome, str]] = ..., message: _Optional[str] = ..., directory_us: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms",)
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    def __init__(self, sent_unix_ms: _Optional[int] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Draining(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class DirectoryReport(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[DirectoryPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[DirectoryPolicy, _Mapping]]] = ...) -> None: ...

class DirectoryPolicy(_message.Message):
    __slots__ = ("domain", "known", "lockout_threshold", "source")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    known: bool
    lockout_threshold: int
    source: str
    def __init__(self, domain: _Optional[str] = ..., known: _Optional[bool] = ..., lockout_threshold: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("started_at", "handled", "succeeded", "failed", "errors", "servers")
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    started_at: float
    handled: int
    succeeded: int
    failed: int
    errors: int
    servers: _containers.RepeatedCompositeFieldContainer[ServerHealth]
    def __init__(self, started_at: _Optional[float] = ..., handled: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[int] = ..., servers: _Optional[_Iterable[_Union[ServerHealth, _Mapping]]] = ...) -> None: ...

class ServerHealth(_message.Message):
    __slots__ = ("server", "reachable", "last_error", "last_error_at", "median_bind_ms", "binds")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_BIND_MS_FIELD_NUMBER: _ClassVar[int]
    BINDS_FIELD_NUMBER: _ClassVar[int]
    server: str
    reachable: bool
    last_error: str
    last_error_at: float
    median_bind_ms: float
    binds: int
    def __init__(self, server: _Optional[str] = ..., reachable: _Optional[bool] = ..., last_error: _Optional[str] = ..., last_error_at: _Optional[float] = ..., median_bind_ms: _Optional[float] = ..., binds: _Optional[int] = ...) -> None: ...
