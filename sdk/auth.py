"""Credentials for calls to a hub: a bearer key or token in every call's metadata, found the way
the CLI finds it (an explicit value, AGENTHUB_KEY, AGENTHUB_KEY_FILE, or the admin key `agenthub up`
keeps in its data dir)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

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


class BearerAuth(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <key>` to every call of a channel (gRPC call credentials need
    TLS; metadata works on any channel, as the hub's loopback default)."""

    def __init__(self, key: str) -> None:
        self._pair = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._pair)
        return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_key(details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_key(details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(self._with_key(details), requests)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(self._with_key(details), requests)


def hub_channel(address: str, key: str | None) -> grpc.aio.Channel:
    """A channel to a hub that sends `key` with every call (none: calls go without credentials)."""
    return grpc.aio.insecure_channel(address, interceptors=[BearerAuth(key)] if key else None)
