"""Credentials for calls to a hub: a bearer key or token in every call's metadata, found the way
the CLI finds it (an explicit value, AGENTHUB_KEY, AGENTHUB_KEY_FILE, or the admin key `agenthub up`
keeps in its data dir), and TLS for the channel (explicit, or AGENTHUB_TLS, AGENTHUB_TLS_CA,
AGENTHUB_TLS_CLIENT_CERT and AGENTHUB_TLS_CLIENT_KEY)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from agenthub.sdk.errors import ConfigError

DEFAULT_KEY_FILE = Path(".agenthub") / "admin.key"


def resolve_key(explicit: str | None = None) -> str | None:
    """The credential to use: `explicit`, else $AGENTHUB_KEY, else the file $AGENTHUB_KEY_FILE names,
    else `.agenthub/admin.key` in the working directory when it exists, else none."""
    if explicit:
        return explicit.strip()
    if key := os.environ.get("AGENTHUB_KEY", "").strip():
        return key
    path = Path(os.environ["AGENTHUB_KEY_FILE"]) if os.environ.get("AGENTHUB_KEY_FILE") else DEFAULT_KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class _Bearer:
    """Adds `authorization: Bearer <key>` to a call's metadata (gRPC call credentials need TLS;
    metadata works on any channel, as the hub's loopback default)."""

    def __init__(self, key: str) -> None:
        self._pair = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._pair)
        return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]


class _UnaryUnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_key(details), request)


class _UnaryStreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_key(details), request)


class _StreamUnaryBearer(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(self._with_key(details), requests)


class _StreamStreamBearer(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(self._with_key(details), requests)


def bearer_auth(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send `key` with every call of a channel: one per kind of call, because
    grpc.aio files an interceptor under the first kind it implements only (one class implementing
    all four sent the key with unary calls alone; every streaming call went without it)."""
    kinds = (_UnaryUnaryBearer, _UnaryStreamBearer, _StreamUnaryBearer, _StreamStreamBearer)
    return [kind(key) for kind in kinds]


@dataclass(frozen=True)
class ClientTls:
    """How a channel to a hub is secured: plain text (`enabled` false), or TLS verified with `ca`
    (None: the system's roots), presenting `cert`/`key` as a client certificate when given (mTLS)."""

    enabled: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials for these files."""
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a client certificate needs its key: give both (AGENTHUB_TLS_CLIENT_CERT/_KEY)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca), private_key=_read(self.key), certificate_chain=_read(self.cert)
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same for HTTPS (httpx's `verify=`): servers verified with `ca` (None: the system's
        roots), `cert`/`key` presented as a client certificate when given."""
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a client certificate needs its key: give both (AGENTHUB_TLS_CLIENT_CERT/_KEY)")
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
        except OSError as exc:  # ssl.SSLError too: a file that is not PEM
            raise ConfigError(f"cannot use the TLS files {self._files()}: {exc.strerror or exc}") from None
        return context

    def _files(self) -> str:
        return ", ".join(str(p) for p in (self.ca, self.cert, self.key) if p is not None)


def resolve_tls(
    tls: bool | None = None,
    *,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
) -> ClientTls:
    """TLS for calls to a hub: each file explicit, else from $AGENTHUB_TLS_CA, $AGENTHUB_TLS_CLIENT_CERT
    and $AGENTHUB_TLS_CLIENT_KEY. On or off as `tls` says; unsaid, on when $AGENTHUB_TLS is
    1/true/yes/on or any file is set."""
    ca = ca or os.environ.get("AGENTHUB_TLS_CA") or None
    cert = cert or os.environ.get("AGENTHUB_TLS_CLIENT_CERT") or None
    key = key or os.environ.get("AGENTHUB_TLS_CLIENT_KEY") or None
    paths = [Path(p) if p else None for p in (ca, cert, key)]
    if tls is None:
        flag = os.environ.get("AGENTHUB_TLS", "").strip().lower() in ("1", "true", "yes", "on")
        tls = flag or any(paths)
    return ClientTls(tls, *paths)


# gRPC waits longer and longer between tries to reach a server that is not there (up to two
# minutes), failing every call meanwhile: an agent started before its hub, or a client of a hub
# that was down for a while, would find it up to minutes late. A hub is worth trying every 2 s.
RECONNECT = (("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 2000))


def hub_channel(address: str, key: str | None, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to a hub that sends `key` with every call (none: calls go without credentials),
    over TLS when `tls` (default: `resolve_tls()`, from the environment) says so."""
    tls = tls if tls is not None else resolve_tls()
    interceptors = bearer_auth(key) if key else None
    if not tls.enabled:
        return grpc.aio.insecure_channel(address, options=RECONNECT, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), options=RECONNECT, interceptors=interceptors)


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
