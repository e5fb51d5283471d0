"""Tools from Model Context Protocol servers (stdio and streamable HTTP), with the `mcp` package.

`Agent(..., mcp=[MCPServer.stdio(...), MCPServer.http(...)])`: each server's tools are offered to
the model like local ones and run through the same tool loop, so their calls, retries and results
are recorded in the thread the same way. A server that is down fails only its own tools, with a
readable error, and the agent reconnects on the next call (a stdio server is started again).

Each connection lives in its own background task: the `mcp` client keeps anyio task groups open,
which must be entered and left by one task, while calls come from any request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent

from agenthub.sdk._aio import cancel_and_wait
from agenthub.sdk.tools import Tool, ToolError, TransientToolError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MCPServer:
    """Where an MCP server is: a command to start (stdio) or a URL (streamable HTTP).

    Args:
        name: names the server in errors, logs and the thread (`mcp_server` of each tool call).
        command / args / env / cwd: a stdio server, started as a child process of the agent.
        url: a streamable HTTP server, e.g. http://127.0.0.1:8000/mcp.
        prefix: put before each of its tool names (to keep two servers' tools apart).
        connect_timeout_s: longest wait to connect and list the tools.
        reopen_s: how often a turn tries again to reach the server while it is not connected.
    """

    name: str
    command: str = ""
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    url: str = ""
    prefix: str = ""
    connect_timeout_s: float = 10.0
    reopen_s: float = 30.0

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ValueError(f"MCP server {self.name!r}: give either a command (stdio) or a url (HTTP)")

    @classmethod
    def stdio(cls, name: str, command: str, *args: str, **options: Any) -> MCPServer:
        """A server the agent starts itself and talks to over its stdin/stdout."""
        return cls(name, command=command, args=tuple(args), **options)

    @classmethod
    def http(cls, name: str, url: str, **options: Any) -> MCPServer:
        """A server reached over streamable HTTP."""
        return cls(name, url=url, **options)

    def target(self) -> StdioServerParameters | str:
        if self.url:
            return self.url
        env = dict(self.env) if self.env is not None else None
        return StdioServerParameters(command=self.command, args=list(self.args), env=env, cwd=self.cwd)


@dataclass
class MCPConnection:
    """One server's live connection and the tools it last listed."""

    server: MCPServer
    tools: list[Tool] = field(default_factory=list)
    _client: Client | None = None
    _runner: asyncio.Task[None] | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tried_at: float = float("-inf")

    async def open(self) -> None:
        """Connect and list the tools; a failure is logged and leaves the tools as they were."""
        self._tried_at = time.monotonic()
        try:
            await self._connect()
        except TransientToolError as exc:
            log.warning("MCP server unavailable", server=self.server.name, error=str(exc))

    async def refresh(self) -> None:
        """Before a turn: a server not connected is tried again (at most every `reopen_s`), so
        one that was down when the agent started offers its tools once it is up."""
        if self._client is None and time.monotonic() - self._tried_at >= self.server.reopen_s:
            await self.open()

    async def close(self) -> None:
        """Disconnect (a stdio server's process ends with it)."""
        self._closing.set()
        runner, self._runner, self._client = self._runner, None, None
        if runner is not None:
            done, _ = await asyncio.wait({runner}, timeout=5)
            if not done:  # a server slow to go: make sure it is gone
                await cancel_and_wait(runner)

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Call one of the server's tools; its text result, or a readable `ToolError`."""
        client = await self._connect() if self._client is None else self._client
        runner = self._runner
        assert runner is not None
        request = asyncio.ensure_future(client.call_tool(name, arguments))
        try:
            await asyncio.wait({request, runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not request.done():
                request.cancel()
        if not request.done() or request.cancelled():
            await self._drop(runner)
            raise self._down("the connection was lost")
        try:
            result = request.result()
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                await self._drop(runner)
                raise self._down("the connection was closed") from None
            raise ToolError(f"{self.server.name}: {exc.message}") from None
        return _result_text(result, f"{self.server.name}.{name}")

    async def _connect(self) -> Client:
        """A connected client, connecting (and listing the tools) first if there is none."""
        async with self._lock:
            if self._client is not None:
                return self._client
            self._closing = asyncio.Event()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            runner = asyncio.create_task(self._hold(ready), name=f"mcp-{self.server.name}")
            try:
                async with asyncio.timeout(self.server.connect_timeout_s):
                    client = await asyncio.shield(ready)
                    listing = await client.list_tools()
            except Exception as exc:  # refused, timed out, bad command, handshake: all "unavailable"
                await cancel_and_wait(runner)
                raise self._down(_leaf_message(exc) or "it did not answer in time") from None
            self._client, self._runner = client, runner
            self.tools = [self._tool(t.name, t.description or t.name, t.input_schema) for t in listing.tools]
            log.info("MCP server connected", server=self.server.name, tools=[t.name for t in self.tools])
            return client

    async def _hold(self, ready: asyncio.Future[Client]) -> None:
        """The connection's own task: enter the client, hand it out, hold it until closing."""
        try:
            async with Client(self.server.target()) as client:
                ready.set_result(client)
                await self._closing.wait()
        except Exception as exc:  # the transport failed: callers waiting on it see it end
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP connection ended", server=self.server.name, error=_leaf_message(exc))

    async def _drop(self, runner: asyncio.Task[None]) -> None:
        """Forget a broken connection, so the next call connects again."""
        if self._runner is runner:
            self._client, self._runner = None, None
            self._closing.set()
            await cancel_and_wait(runner)

    def _down(self, reason: str) -> TransientToolError:
        where = self.server.url or self.server.command
        return TransientToolError(f"MCP server {self.server.name!r} ({where}) is unavailable: {reason}")

    def _tool(self, name: str, description: str, schema: dict[str, Any]) -> Tool:
        async def call(**arguments: Any) -> str:
            return await self.call(name, arguments)

        parameters = schema or {"type": "object", "properties": {}}
        return Tool(
            f"{self.server.prefix}{name}",
            description,
            parameters,
            call,
            None,
            metadata={"mcp_server": self.server.name},
        )


def _result_text(result: CallToolResult, where: str) -> str:
    """An MCP tool result as text; an error result becomes a `ToolError` the model sees."""
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    if result.is_error:
        raise ToolError(f"{where}: {text or 'the tool reported an error'}")
    if not text and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return text


def _leaf_message(exc: BaseException) -> str:
    """The first real message inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc)
