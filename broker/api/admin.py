"""The AdminService servicer: authenticate the administrator, run the method, audit the call.

Served on the agent endpoint, whose handshake already requires a client certificate of the
broker's CA; here the certificate must also be an administrator's, known to the store and not
revoked (:mod:`broker.trust.administrators`), looked up on every call. The methods themselves
are :mod:`broker.admin`'s, the same the CLI runs against a store it opens.

Store work runs on one worker thread of its own, not on the event loop that carries sign-ins:
a ``ShowTenant`` reads every counter. With SQLite it runs on a connection of its own (a SQLite
connection must not carry two threads' transactions); a shared store's pool is thread-safe.

Every call ends in one ``admin.call`` audit line: who (the administrator, or the refused
certificate's serial), the method, what it named (tenant, user, agent, token id; never a
token's secret, an authenticator's URI, or banned terms) and its status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from broker.admin.administration import METHODS
from broker.trust import administrators
from pta import rpc, tls
from pta.errors import InvalidRequest, PtaError, rpc_errors
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from google.protobuf.message import Message

    from broker.admin.administration import Administration
    from broker.store.records import AdministratorRecord

log = structlog.get_logger()
SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
#: Request fields an audit line repeats: names, never secrets (DeleteToken's ``id`` may be a
#: whole token, so the id it resolved to is taken from the answer instead).
AUDITED = ("name", "tenant", "user", "agent_id", "all")
#: Every admin request is small; the agent endpoint takes stream messages of megabytes, so the
#: service bounds its own requests (as the public endpoint does sign-ins).
MAX_REQUEST_BYTES = rpc.MAX_MESSAGE_BYTES
#: An audited value is cut to this many characters.
MAX_AUDITED = 256


class AdminService:
    """Serves :data:`SERVICE` from an :class:`~broker.admin.Administration`."""

    def __init__(self, administration: Administration) -> None:
        """Run ``administration``'s methods on a worker thread of this service's own."""
        self._admin = administration
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pta-admin")

    def servicer(self) -> SimpleNamespace:
        """An object with one handler per method, for :func:`pta.rpc.add_service`."""
        return SimpleNamespace(**{name: self._handler(name) for name in METHODS})

    def close(self) -> None:
        """Finish the call running, if any, and stop the worker."""
        self._worker.shutdown(wait=True)

    def _handler(self, method: str) -> Callable[..., Awaitable[Message]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            started = time.monotonic()
            caller: dict[str, str] = {"status": grpc.StatusCode.INTERNAL.name}
            answer: Message | None = None
            try:
                async with rpc_errors(context):
                    try:
                        if request.ByteSize() > MAX_REQUEST_BYTES:
                            raise InvalidRequest(
                                f"request too large: at most {MAX_REQUEST_BYTES // 1024} KiB"
                            )
                        answer = await self._run(method, request, context.auth_context(), caller)
                        caller["status"] = grpc.StatusCode.OK.name
                    except PtaError as error:
                        caller["status"] = error.code.name
                        raise
            finally:
                caller["duration_ms"] = f"{(time.monotonic() - started) * 1000:.1f}"
                _audit(method, request, answer, caller)
            if answer is None:  # rpc_errors aborted the call: never reached.
                raise RuntimeError(method)
            return answer

        return handle

    async def _run(
        self,
        method: str,
        request: Message,
        auth_context: Mapping[str, Iterable[bytes]],
        caller: dict[str, str],
    ) -> Message:
        """Authenticate and run ``method`` on the worker; ``caller`` learns who called."""
        loop = asyncio.get_running_loop()

        def work() -> Message:
            cert = tls.peer_certificate(auth_context)
            if cert is not None:
                caller["serial"] = tls.serial_hex(cert)
            record: AdministratorRecord = administrators.authenticate(
                self._admin.store.administrators, auth_context
            )
            caller["administrator"] = record.name
            return self._admin.call(method, request)

        return await loop.run_in_executor(self._worker, work)


def _audit(method: str, request: Message, answer: Message | None, caller: dict[str, str]) -> None:
    """One line per call, refused or not: who, what on what, and how it ended.

    ``caller`` says who called (administrator, certificate serial) and how it went (status,
    duration_ms).
    """
    named = {field.name: value for field, value in request.ListFields() if field.name in AUDITED}
    if isinstance(answer, admin_pb2.DeleteTokenResponse):
        named["token_id"] = answer.id
    if isinstance(answer, admin_pb2.CreateTokenResponse):
        named["token_id"] = answer.id
    log.info(
        "admin.call",
        method=method,
        administrator=caller.get("administrator", ""),
        serial=caller.get("serial", ""),
        status=caller["status"],
        duration_ms=float(caller["duration_ms"]),
        **{k: v[:MAX_AUDITED] if isinstance(v, str) else v for k, v in named.items()},
    )
