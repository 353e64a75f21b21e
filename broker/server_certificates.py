"""The broker's own server certificate, reissued before it expires and served without a restart.

grpcio asks a fetcher before every new TLS handshake whether the certificate changed
(``grpc.dynamic_ssl_server_credentials``); streams already open keep their session. Both
endpoints serve the same certificate; only the agent endpoint also requires client
certificates from the CA.
"""

from __future__ import annotations

import datetime
import threading
from typing import TYPE_CHECKING

import grpc
import structlog

from pta import tls

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from broker.trust.ca import CertificateAuthority, ServerIdentity

log = structlog.get_logger()


class ServerCertificates:
    """Holds the current server identity and hands grpc a new one when it is due."""

    def __init__(
        self,
        ca: CertificateAuthority,
        data_dir: Path,
        sans: tuple[str, ...],
        lifetime: datetime.timedelta,
    ) -> None:
        """Load (or issue) the server certificate.

        Args:
            ca: Signs the server certificate.
            data_dir: Where ``server.pem`` and ``server.key`` live.
            sans: Extra names for the certificate.
            lifetime: How long each server certificate is valid.
        """
        self._ca = ca
        self._data_dir = data_dir
        self._sans = sans
        self._lifetime = lifetime
        # grpc calls fetchers from its own threads: one reissue at a time.
        self._lock = threading.Lock()
        self.identity = ca.server_identity(data_dir, sans, lifetime)
        self.generation = 0

    def _config(self, client_ca: bytes | None) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.identity.key_pem, self.identity.chain_pem)], root_certificates=client_ca
        )

    def _current(self) -> tuple[int, ServerIdentity]:
        with self._lock:
            if datetime.datetime.now(datetime.UTC) >= tls.renewal_due(self.identity.certificate):
                old = tls.serial_hex(self.identity.certificate)
                self.identity = self._ca.server_identity(
                    self._data_dir, self._sans, self._lifetime, force=True
                )
                self.generation += 1
                log.info(
                    "broker.server_certificate_rotated",
                    old_serial=old,
                    serial=tls.serial_hex(self.identity.certificate),
                    not_after=self.identity.certificate.not_valid_after_utc.isoformat(),
                )
            return self.generation, self.identity

    def credentials(self, client_ca: bytes | None = None) -> grpc.ServerCredentials:
        """Build credentials that always serve the current certificate.

        Args:
            client_ca: When given, clients must present a certificate from this CA.
        """
        served = self.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal served
            generation, _ = self._current()
            if generation == served:
                return None
            served = generation
            return self._config(client_ca)

        # grpc documents None as "no change"; typeshed's stub does not say so.
        fetcher: Callable[[], grpc.ServerCertificateConfiguration] = fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._config(client_ca),
            fetcher,
            require_client_authentication=client_ca is not None,
        )
