"""MCP tools: an agent takes tools from MCP servers (stdio and streamable HTTP) started by the test
(tests/mcp_server.py, built with the `mcp` package); the model sees them like local tools, the
thread records their calls and results, and a server that is down fails only its own tools, with
a readable error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import TaskState

from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, MCPServer, ModelReply, ScriptedModel, Tool, ToolCall, tool
from agenthub.sdk.errors import ConfigError
from agenthub.sdk.models import ChatMessage
from tests.conftest import eventually
from tests.scripted import RecordingModel

ROOT = Path(__file__).resolve().parent.parent


def stdio_server(**options: Any) -> MCPServer:
    return MCPServer.stdio("box", sys.executable, "-m", "tests.mcp_server", "stdio", cwd=str(ROOT), **options)


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """The test MCP server over streamable HTTP on a free loopback port: (its URL, its process)."""
    port = free_port()
    async with serve_http(port) as process:
        yield f"http://127.0.0.1:{port}/mcp", process


@contextlib.asynccontextmanager
async def serve_http(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """The test MCP server over streamable HTTP on `port`, until the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mcp_server", "http", str(port), cwd=ROOT,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip

    async def listening() -> bool:
        try:
            async with httpx.AsyncClient() as http:
                await http.get(f"http://127.0.0.1:{port}/", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    assert await eventually(listening, timeout=30), "the MCP server did not start"
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def by_command(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
    """'<tool> <text>' calls that tool (with `text` when it takes one); a tool result is the answer."""
    last = messages[-1]
    if last["role"] == "tool" or not tools:
        return ModelReply(str(last["content"]))
    name, _, text = str(last["content"]).partition(" ")
    schema = next(t for t in tools if t.name == name).parameters.get("properties", {})
    return ModelReply("", [ToolCall(name, {"text": text} if "text" in schema else {})])


@tool
def local_echo(text: str) -> str:
    """A local tool beside the MCP ones."""
    return f"local: {text}"


async def tool_data(client: HubClient, context_id: str) -> list[dict[str, Any]]:
    """The data parts of the thread's messages, once the turn's answer is recorded."""

    async def recorded() -> list[dict[str, Any]]:
        thread = await client.get_thread(context_id)
        data = [
            part["data"]
            for m in thread.messages
            for part in json.loads(m.message_json).get("parts", [])
            if isinstance(part.get("data"), dict)
        ]
        return data if any("tool_result" in d for d in data) else []

    return await eventually(recorded)


async def test_a_stdio_server_s_tools_are_called_through_the_hub(hub: Hub, client: HubClient) -> None:
    model = RecordingModel(ScriptedModel(by_command))
    async with Agent("boxed", tools=[local_echo], mcp=[stdio_server()], model=model, hub=hub.address):
        task = await client.send("boxed", "reverse hello")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "olleh"
        data = await tool_data(client, task.context_id)
    assert {"local_echo", "reverse", "pid", "refuse"} <= set(model.inputs[0]["tools"])
    call = next(d["tool_call"] for d in data if "tool_call" in d)
    assert call == {**call, "name": "reverse", "arguments": {"text": "hello"}, "mcp_server": "box"}
    result = next(d["tool_result"] for d in data if "tool_result" in d)
    assert result == {**result, "name": "reverse", "ok": True, "content": "olleh"}


async def test_an_mcp_error_result_goes_back_to_the_model(hub: Hub, client: HubClient) -> None:
    async with Agent("boxed", mcp=[stdio_server()], model=ScriptedModel(by_command), hub=hub.address):
        task = await client.send("boxed", "refuse not today")
    assert (
        task.status.message.parts[0].text
        == "error: box.refuse: Error executing tool refuse: refused: not today"
    )


async def test_an_http_server_s_tools_and_a_server_killed(
    hub: Hub, client: HubClient, http_server: tuple[str, asyncio.subprocess.Process]
) -> None:
    url, process = http_server
    server = MCPServer.http("web", url, connect_timeout_s=2)
    async with Agent(
        "webbed", tools=[local_echo], mcp=[server], model=ScriptedModel(by_command), hub=hub.address,
        tool_retries=1, tool_backoff_s=0.01,
    ):  # fmt: skip
        task = await client.send("webbed", "reverse abc")
        assert task.status.message.parts[0].text == "cba"
        data = await tool_data(client, task.context_id)
        assert next(d["tool_call"] for d in data if "tool_call" in d)["mcp_server"] == "web"

        process.kill()
        await process.wait()
        down = await client.send("webbed", "reverse abc", context_id=task.context_id)
        assert down.status.state == TaskState.TASK_STATE_COMPLETED  # the agent answers, saying why
        error = down.status.message.parts[0].text
        assert error.startswith("error: reverse failed after 2 attempts: MCP server 'web'")
        assert url in error and "unavailable" in error and "Error" not in error.split(":", 1)[1]

        still = await client.send("webbed", "local_echo fine")
        assert still.status.message.parts[0].text == "local: fine"  # only the server's tools fail


async def test_a_killed_stdio_server_is_started_again(hub: Hub, client: HubClient) -> None:
    async with Agent(
        "boxed", mcp=[stdio_server()], model=ScriptedModel(by_command), hub=hub.address, tool_backoff_s=0.01
    ):
        first = await client.send("boxed", "pid")
        os.kill(int(first.status.message.parts[0].text), signal.SIGKILL)
        again = await client.send("boxed", "reverse back", context_id=first.context_id)
        assert again.status.message.parts[0].text == "kcab"
        data = await tool_data(client, again.context_id)
    retry = next(d["tool_retry"] for d in data if "tool_retry" in d)
    assert retry["name"] == "reverse" and "MCP server 'box'" in retry["error"]


async def test_a_server_down_at_start_costs_only_its_tools(hub: Hub, client: HubClient) -> None:
    dead = MCPServer.http("gone", f"http://127.0.0.1:{free_port()}/mcp", connect_timeout_s=2)
    model = RecordingModel(ScriptedModel(by_command))
    async with Agent("survivor", tools=[local_echo], mcp=[dead], model=model, hub=hub.address):
        task = await client.send("survivor", "local_echo hi")
    assert task.status.message.parts[0].text == "local: hi"
    assert model.inputs[0]["tools"] == ["local_echo"]


async def test_a_server_down_at_start_offers_its_tools_once_it_is_up(hub: Hub, client: HubClient) -> None:
    port = free_port()
    late = MCPServer.http("late", f"http://127.0.0.1:{port}/mcp", connect_timeout_s=2, reopen_s=0)
    model = RecordingModel(ScriptedModel(by_command))
    async with Agent("patient", tools=[local_echo], mcp=[late], model=model, hub=hub.address):
        assert (await client.send("patient", "local_echo early")).status.message.parts[
            0
        ].text == "local: early"
        async with serve_http(port):
            task = await client.send("patient", "reverse later")
    assert task.status.message.parts[0].text == "retal"
    assert [i["tools"] for i in model.inputs[:1]] == [["local_echo"]]
    assert "reverse" in model.inputs[-1]["tools"]


async def test_tool_names_used_twice_are_refused_at_start() -> None:
    @tool
    def reverse(text: str) -> str:
        """A local reverse that clashes with the server's."""
        return text

    agent = Agent("clash", tools=[reverse], mcp=[stdio_server()], model=ScriptedModel(), hub=None)
    with pytest.raises(ConfigError, match="reverse"):
        await agent.start()
    await agent.stop()
    async with Agent("prefixed", tools=[reverse], mcp=[stdio_server(prefix="box_")], hub=None) as ok:
        assert "box_reverse" in {t.name for t in ok._offered_tools()}
