from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddTenantRequest(_message.Message):
    __slots__ = ("name", "domains")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "domains")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class ShowTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TenantPolicy(_message.Message):
    __slots__ = ("lockout_threshold", "lockout_duration", "lockout_max_duration", "familiar_networks", "familiar_window", "mfa")
    LOCKOUT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_DURATION_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    FAMILIAR_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    FAMILIAR_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MFA_FIELD_NUMBER: _ClassVar[int]
    lockout_threshold: int
    lockout_duration: float
    lockout_max_duration: float
    familiar_networks: _containers.RepeatedScalarFieldContainer[str]
    familiar_window: float
    mfa: str
    def __init__(self, lockout_threshold: _Optional[int] = ..., lockout_duration: _Optional[float] = ..., lockout_max_duration: _Optional[float] = ..., familiar_networks: _Optional[_Iterable[str]] = ..., familiar_window: _Optional[float] = ..., mfa: _Optional[str] = ...) -> None: ...

class TenantDirectory(_message.Message):
    __slots__ = ("domain", "agent_id", "known", "lockout_threshold", "source", "reported_at", "warning")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    domain: str
    agent_id: str
    known: bool
    lockout_threshold: int
    source: str
    reported_at: str
    warning: str
    def __init__(self, domain: _Optional[str] = ..., agent_id: _Optional[str] = ..., known: _Optional[bool] = ..., lockout_threshold: _Optional[int] = ..., source: _Optional[str] = ..., reported_at: _Optional[str] = ..., warning: _Optional[str] = ...) -> None: ...

class Guard(_message.Message):
    __slots__ = ("refuses", "until")
    REFUSES_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    refuses: str
    until: str
    def __init__(self, refuses: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class TenantDetails(_message.Message):
    __slots__ = ("tenant", "domains", "policy", "directories", "locked_users", "guarded_users", "users_with_failures", "mfa_users", "banned_terms")
    class GuardedUsersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Guard
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Guard, _Mapping]] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    LOCKED_USERS_FIELD_NUMBER: _ClassVar[int]
    GUARDED_USERS_FIELD_NUMBER: _ClassVar[int]
    USERS_WITH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MFA_USERS_FIELD_NUMBER: _ClassVar[int]
    BANNED_TERMS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    policy: TenantPolicy
    directories: _containers.RepeatedCompositeFieldContainer[TenantDirectory]
    locked_users: _containers.RepeatedScalarFieldContainer[str]
    guarded_users: _containers.MessageMap[str, Guard]
    users_with_failures: int
    mfa_users: int
    banned_terms: int
    def __init__(self, tenant: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[TenantPolicy, _Mapping]] = ..., directories: _Optional[_Iterable[_Union[TenantDirectory, _Mapping]]] = ..., locked_users: _Optional[_Iterable[str]] = ..., guarded_users: _Optional[_Mapping[str, Guard]] = ..., users_with_failures: _Optional[int] = ..., mfa_users: _Optional[int] = ..., banned_terms: _Optional[int] = ...) -> None: ...

class SetTenantPolicyRequest(_message.Message):
    __slots__ = ("name", "lockout_threshold", "lockout_duration", "lockout_max", "familiar_networks", "no_familiar_networks", "familiar_window", "mfa")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_DURATION_FIELD_NUMBER: _ClassVar[int]
    LOCKOUT_MAX_FIELD_NUMBER: _ClassVar[int]
    FAMILIAR_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    NO_FAMILIAR_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    FAMILIAR_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MFA_FIELD_NUMBER: _ClassVar[int]
    name: str
    lockout_threshold: int
    lockout_duration: str
    lockout_max: str
    familiar_networks: _containers.RepeatedScalarFieldContainer[str]
    no_familiar_networks: bool
    familiar_window: str
    mfa: str
    def __init__(self, name: _Optional[str] = ..., lockout_threshold: _Optional[int] = ..., lockout_duration: _Optional[str] = ..., lockout_max: _Optional[str] = ..., familiar_networks: _Optional[_Iterable[str]] = ..., no_familiar_networks: _Optional[bool] = ..., familiar_window: _Optional[str] = ..., mfa: _Optional[str] = ...) -> None: ...

class SetTenantPolicyResponse(_message.Message):
    __slots__ = ("policy", "warnings")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ChangeBannedTermsRequest(_message.Message):
    __slots__ = ("tenant", "add", "remove")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    add: _containers.RepeatedScalarFieldContainer[str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., add: _Optional[_Iterable[str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class BannedTerm(_message.Message):
    __slots__ = ("term", "normalised")
    TERM_FIELD_NUMBER: _ClassVar[int]
    NORMALISED_FIELD_NUMBER: _ClassVar[int]
    term: str
    normalised: str
    def __init__(self, term: _Optional[str] = ..., normalised: _Optional[str] = ...) -> None: ...

class ChangeBannedTermsResponse(_message.Message):
    __slots__ = ("added", "removed", "terms")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    added: int
    removed: int
    terms: _containers.RepeatedCompositeFieldContainer[BannedTerm]
    def __init__(self, added: _Optional[int] = ..., removed: _Optional[int] = ..., terms: _Optional[_Iterable[_Union[BannedTerm, _Mapping]]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("tenant", "ttl")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    ttl: str
    def __init__(self, tenant: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    id: str
    expires_at: float
    def __init__(self, token: _Optional[str] = ..., id: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "tenant", "created_at", "expires_at", "used", "expired")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    created_at: float
    expires_at: float
    used: bool
    expired: bool
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., used: _Optional[bool] = ..., expired: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class DeleteTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteTokenResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentCertificate(_message.Message):
    __slots__ = ("serial", "not_after")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    serial: str
    not_after: str
    def __init__(self, serial: _Optional[str] = ..., not_after: _Optional[str] = ...) -> None: ...

class AgentChecks(_message.Message):
    __slots__ = ("handled", "succeeded", "failed", "errors", "since")
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    handled: int
    succeeded: int
    failed: int
    errors: int
    since: str
    def __init__(self, handled: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[int] = ..., since: _Optional[str] = ...) -> None: ...

class AgentDirectoryServer(_message.Message):
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
    last_error_at: str
    median_bind_ms: float
    binds: int
    def __init__(self, server: _Optional[str] = ..., reachable: _Optional[bool] = ..., last_error: _Optional[str] = ..., last_error_at: _Optional[str] = ..., median_bind_ms: _Optional[float] = ..., binds: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("id", "tenant", "hostname", "revoked", "connected", "version", "domains", "serial", "not_after", "certificates", "in_flight", "last_heartbeat", "streams", "brokers", "checks", "directories")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    hostname: str
    revoked: bool
    connected: bool
    version: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    serial: str
    not_after: str
    certificates: _containers.RepeatedCompositeFieldContainer[AgentCertificate]
    in_flight: int
    last_heartbeat: float
    streams: int
    brokers: _containers.RepeatedScalarFieldContainer[str]
    checks: AgentChecks
    directories: _containers.RepeatedCompositeFieldContainer[AgentDirectoryServer]
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., hostname: _Optional[str] = ..., revoked: _Optional[bool] = ..., connected: _Optional[bool] = ..., version: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., serial: _Optional[str] = ..., not_after: _Optional[str] = ..., certificates: _Optional[_Iterable[_Union[AgentCertificate, _Mapping]]] = ..., in_flight: _Optional[int] = ..., last_heartbeat: _Optional[float] = ..., streams: _Optional[int] = ..., brokers: _Optional[_Iterable[str]] = ..., checks: _Optional[_Union[AgentChecks, _Mapping]] = ..., directories: _Optional[_Iterable[_Union[AgentDirectoryServer, _Mapping]]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class RevokeAgentResponse(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class ListLockoutsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class DirectoryGuard(_message.Message):
    __slots__ = ("sent_to_directory", "directory_locks_at", "refuses", "until")
    SENT_TO_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_LOCKS_AT_FIELD_NUMBER: _ClassVar[int]
    REFUSES_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    sent_to_directory: int
    directory_locks_at: int
    refuses: str
    until: str
    def __init__(self, sent_to_directory: _Optional[int] = ..., directory_locks_at: _Optional[int] = ..., refuses: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class Lockout(_message.Message):
    __slots__ = ("user", "location", "failures", "lockouts", "locked_for_seconds", "last_failure", "guard")
    USER_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LOCKOUTS_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    user: str
    location: str
    failures: int
    lockouts: int
    locked_for_seconds: int
    last_failure: str
    guard: DirectoryGuard
    def __init__(self, user: _Optional[str] = ..., location: _Optional[str] = ..., failures: _Optional[int] = ..., lockouts: _Optional[int] = ..., locked_for_seconds: _Optional[int] = ..., last_failure: _Optional[str] = ..., guard: _Optional[_Union[DirectoryGuard, _Mapping]] = ...) -> None: ...

class ListLockoutsResponse(_message.Message):
    __slots__ = ("lockouts",)
    LOCKOUTS_FIELD_NUMBER: _ClassVar[int]
    lockouts: _containers.RepeatedCompositeFieldContainer[Lockout]
    def __init__(self, lockouts: _Optional[_Iterable[_Union[Lockout, _Mapping]]] = ...) -> None: ...

class ClearLockoutsRequest(_message.Message):
    __slots__ = ("tenant", "user", "all")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user: str
    all: bool
    def __init__(self, tenant: _Optional[str] = ..., user: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class ClearLockoutsResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: int
    def __init__(self, cleared: _Optional[int] = ...) -> None: ...

class ListMfaRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class MfaUser(_message.Message):
    __slots__ = ("user", "enrolled_at")
    USER_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    user: str
    enrolled_at: str
    def __init__(self, user: _Optional[str] = ..., enrolled_at: _Optional[str] = ...) -> None: ...

class ListMfaResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[MfaUser]
    def __init__(self, users: _Optional[_Iterable[_Union[MfaUser, _Mapping]]] = ...) -> None: ...

class EnrolMfaRequest(_message.Message):
    __slots__ = ("tenant", "user", "issuer", "replace")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user: str
    issuer: str
    replace: bool
    def __init__(self, tenant: _Optional[str] = ..., user: _Optional[str] = ..., issuer: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class EnrolMfaResponse(_message.Message):
    __slots__ = ("user", "uri")
    USER_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    user: str
    uri: str
    def __init__(self, user: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class RemoveMfaRequest(_message.Message):
    __slots__ = ("tenant", "user")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user: str
    def __init__(self, tenant: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class RemoveMfaResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...
