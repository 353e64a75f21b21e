"""The AdminService's client: what ``pta-broker --broker HOST:PORT --admin-cert DIR`` calls.

Mutual TLS with an administrator's certificate (:mod:`broker.trust.administrators`); the
answers are the contract's messages, the same :mod:`broker.admin` gives a local command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.protobuf import message_factory

from broker.api.admin import SERVICE
from broker.trust import administrators
from pta import rpc, tls
from pta.errors import PtaError

if TYPE_CHECKING:
    from pathlib import Path

    from google.protobuf.message import Message

#: How long a remote command waits for its answer.
REMOTE_TIMEOUT = 30.0


class RemoteError(PtaError):
    """The broker answered a remote command with an error status: its message, as it said it."""


class Remote:
    """Methods run at a broker's AdminService, as the administrator of ``--admin-cert``."""

    def __init__(self, broker: str, cert_dir: Path) -> None:
        """Open a mutual-TLS channel (nothing is sent until the first call).

        Raises:
            OSError: The directory does not hold an administrator's key and certificates.
        """
        key, chain, ca = (
            (cert_dir / name).read_bytes()
            for name in (administrators.KEY_FILE, administrators.CERT_FILE, administrators.CA_FILE)
        )
        self.broker = broker
        self._channel = grpc.secure_channel(
            broker, tls.channel_credentials(ca, key, chain), options=rpc.CHANNEL_OPTIONS
        )

    def call(self, method: str, request: Message) -> Message:
        """Call the broker; its error status becomes a :class:`RemoteError` that says it.

        Raises:
            RemoteError: The broker refused, or could not be reached (UNAVAILABLE).
        """
        descriptor = SERVICE.methods_by_name[method]
        response = message_factory.GetMessageClass(descriptor.output_type)
        stub = self._channel.unary_unary(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        try:
            answer: Message = stub(request, timeout=REMOTE_TIMEOUT)
        except grpc.RpcError as error:
            raise _remote_error(self.broker, error) from None
        return answer

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


def _remote_error(broker: str, error: grpc.RpcError) -> RemoteError:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or code.name
    if code is grpc.StatusCode.UNIMPLEMENTED:
        details = (
            f"{broker} serves no AdminService: it is the broker's agent endpoint that does"
            " (--agent-listen, the public port + 1 by default)"
        )
    elif code is grpc.StatusCode.UNAVAILABLE:
        details = (
            f"cannot reach the AdminService at {broker} ({details}): is it the broker's agent"
            " endpoint (--agent-listen, the public port + 1 by default), and was --admin-cert"
            " issued by this broker's CA?"
        )
    return RemoteError(details)
