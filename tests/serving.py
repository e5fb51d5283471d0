"""HTTP servers of the tests (agents, webhooks, sites) with uvicorn on sockets bound up front.

A port picked free and bound later by uvicorn could be taken in between by any other process of
the run; uvicorn ends a failed bind with `sys.exit` inside its task, which stops the test's whole
event loop. A socket bound here holds its port from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def bound(port: int = 0) -> socket.socket:
    """A loopback TCP socket bound now (port 0: the kernel picks a free one)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port served again after a restart
    sock.bind(("127.0.0.1", port))
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket, **config: Any) -> AsyncIterator[None]:
    """Serve `app` on `sock` until the block ends; `config` goes to uvicorn (TLS settings...)."""
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port_of(sock), **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it served")
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
