"""TLS on the hub's listeners: the settings' certificate, key and client CA as gRPC server
credentials and as uvicorn's SSL options, and the client certificate a gRPC call was verified with.

A client CA makes client certificates required on both listeners: gRPC can only require them or
not ask, and one rule for both ports is easier to reason about. This module never decides who a
caller is; it hands the verified CN to the gate (`Gate.authenticate`).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from uvicorn.protocols.http.h11_impl import H11Protocol

from agenthub.hub.config import HubSettings
from agenthub.sdk.errors import ConfigError


@dataclass(frozen=True)
class ListenerTls:
    """The PEM files one hub serves TLS with; `client_ca` set = mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_settings(cls, settings: HubSettings) -> ListenerTls | None:
        """The listeners' TLS, or None when the hub serves plain text (`agenthub up`)."""
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if settings.tls_cert is None or settings.tls_key is None:
            if settings.tls_client_ca is not None:
                raise ConfigError(
                    "--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)"
                )
            return None
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for `server.add_secure_port`: a client CA requires and verifies client certs."""
        ca = _read(self.client_ca, "tls_client_ca") if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(_read(self.key, "tls_key"), _read(self.cert, "tls_cert"))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments of `uvicorn.Config` that serve the same certificate and client rule."""
        for path, name in ((self.cert, "tls_cert"), (self.key, "tls_key"), (self.client_ca, "tls_client_ca")):
            if path is not None:
                _read(path, name)  # a missing file is one clear line, not an ssl traceback
        return {
            "http": CertifiedH11Protocol if self.client_ca else "auto",
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": str(self.client_ca) if self.client_ca else None,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.client_ca else ssl.CERT_NONE,
        }


def client_cn(context: grpc.aio.ServicerContext) -> str | None:
    """The CN of the client certificate TLS verified for this call, or None (no mTLS, no cert).

    Only a hub with a client CA asks for certificates, and then gRPC accepts none it cannot verify.
    """
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


PEER_CNS: dict[tuple[str, int], str] = {}
"""The verified client certificate's CN of every open HTTPS connection, by the client's address:
uvicorn tells an ASGI app nothing of the peer's certificate, its protocol object sees it."""


class CertifiedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that notes each connection's verified client CN in PEER_CNS
    (read by the HTTP gate through the request's `client`), and forgets it when the connection ends."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cn = _common_name(transport.get_extra_info("ssl_object"))
        if cn and self.client:
            PEER_CNS[(str(self.client[0]), int(self.client[1]))] = cn

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client:
            PEER_CNS.pop((str(self.client[0]), int(self.client[1])), None)
        super().connection_lost(exc)


def http_client_cn(client: tuple[str, int] | None) -> str | None:
    """The CN of the client certificate an HTTPS connection was verified with, or None."""
    return PEER_CNS.get((str(client[0]), int(client[1]))) if client else None


def _common_name(ssl_object: ssl.SSLObject | None) -> str | None:
    peer = ssl_object.getpeercert() if ssl_object is not None else None
    subject: Any = (peer or {}).get("subject", ())  # ((("commonName", "x"),), ...)
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return str(names[0]) if names else None


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc.strerror}") from None
