"""Agent: build an A2A agent in a few lines — name, card, model, instructions, tools.

The agent serves A2A gRPC on its own port and registers its card with a hub. Each turn runs the
loop model → tool calls → model → answer, streaming status updates as A2A events; every tool call,
retry and result travels as a structured data part, so the hub records it in the thread. The model
is given the agent's earlier turns in the same thread, read from the hub (`Memory`). Tools may be
Python functions, tools of MCP servers (`MCPServer`), or other agents reached *through the hub*
(`delegate`), never directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import structlog
from a2a.server.request_handlers import GrpcHandler
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    Message,
    Part,
    SendMessageRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    a2a_pb2_grpc,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from google.protobuf.json_format import MessageToJson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agenthub.sdk._aio import Lifecycle, cancel_and_wait
from agenthub.sdk._events import now, status, text_of
from agenthub.sdk._mcp import MCPConnection, MCPServer
from agenthub.sdk._memory import Memory, fit, recall
from agenthub.sdk._server import (
    NO_SHARED_PORT,
    AgentEvent,
    AgentRequestHandler,
    ServingTls,
    interface_url,
    listen,
)
from agenthub.sdk._toolloop import Outcome, RetryPolicy, ToolRunner
from agenthub.sdk.client import HubClient
from agenthub.sdk.errors import AgentHubError, AgentNotFound, ConfigError, HubUnavailable, ThreadNotFound
from agenthub.sdk.models import ChatMessage, Model, ModelReply, ModelSettings, OpenAIModel, ToolChoice
from agenthub.sdk.tools import Tool, ToolError, make_tool

log = structlog.get_logger(__name__)


@dataclass
class Turn:
    """The task an agent is working on; delegation tools read it to link the hop."""

    agent: Agent
    task_id: str
    context_id: str
    text: str


current_turn: contextvars.ContextVar[Turn] = contextvars.ContextVar("agenthub_turn")


def delegate(agent: str, description: str, *, timeout: float = 300.0) -> Tool:
    """A handoff tool: forwards the current request to another agent, through the hub, in the same
    thread, and makes its answer final. The model only chooses *who*, which small models do well."""

    async def ask() -> str:
        turn = current_turn.get()
        result = await turn.agent.hub.send(
            agent, turn.text, context_id=turn.context_id, parent_task_id=turn.task_id, timeout=timeout
        )
        if isinstance(result, Message):
            return text_of(result)
        if result.status.state != TaskState.TASK_STATE_COMPLETED:
            raise ToolError(
                f"{agent} ended in {TaskState.Name(result.status.state)}: {text_of(result.status.message)}"
            )
        return text_of(result.status.message) or "\n".join(text_of(a) for a in result.artifacts)

    return make_tool(f"ask_{agent}", description, ask, timeout=timeout, return_direct=True, delegate_to=agent)


class Agent(Lifecycle):
    """An A2A agent served over gRPC and registered with a hub.

    Args:
        name: unique agent name (lowercase letters, digits, '-', '_'); also its tenant on the hub.
        description: what the agent does, shown in its card.
        instructions: the system prompt (always given to the model whole).
        tools: tools the model may call.
        mcp: MCP servers whose tools the model may call too (`MCPServer.stdio(...)`, `.http(...)`).
        model: the model (default: `OpenAIModel` configured by `ModelSettings.for_agent(name)`).
        skills: card skills, as `AgentSkill`s or plain descriptions.
        hub: the hub's gRPC address; None serves without registering (and without memory).
        host / port: where to serve A2A gRPC (port 0 = any free port).
        memory: how much of the thread the model sees (default `Memory()`: the last 20 messages,
            4,000 characters); None forgets everything between turns.
        max_steps: model turns that may call tools (default 4); if no answer came by then, one
            more turn asks the model for its answer with tools off (tool choice "none").
        tool_choice: "required" makes the first model turn call a tool (no free-text answer).
        tool_timeout_s / tool_retries / tool_backoff_s: each tool call attempt's time limit
            (default 30 s), the extra attempts after a transient failure (default 2), and the
            first wait between attempts (default 0.5 s, doubling); a tool's own settings win.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        instructions: str = "",
        tools: Sequence[Tool] = (),
        mcp: Sequence[MCPServer] = (),
        model: Model | None = None,
        skills: Sequence[AgentSkill | str] = (),
        hub: str | None = "127.0.0.1:50051",
        host: str = "127.0.0.1",
        port: int = 0,
        memory: Memory | None = Memory(),  # noqa: B008 - frozen, shared safely
        max_steps: int = 4,
        tool_choice: ToolChoice = "auto",
        tool_timeout_s: float = 30.0,
        tool_retries: int = 2,
        tool_backoff_s: float = 0.5,
        heartbeat_s: float = 10.0,
    ) -> None:
        self.name = name
        self.description = description
        self.instructions = instructions
        self.tools = {t.name: t for t in tools}
        self.mcp = [MCPConnection(server) for server in mcp]
        self.model = model
        self.skills = [s if isinstance(s, AgentSkill) else _skill(s) for s in skills]
        self.host = host
        self.port = port
        self.memory = memory if hub else None
        self.max_steps = max_steps
        self.tool_choice: ToolChoice = tool_choice
        self.retry_policy = RetryPolicy(tool_timeout_s, tool_retries, tool_backoff_s)
        self.hub = HubClient(hub or "", sender=name)
        self._hub_address = hub
        self._heartbeat_s = heartbeat_s
        self._server: grpc.aio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._handler = AgentRequestHandler(self)
        self._tls = ServingTls.from_env()  # TLS on its own port (README "TLS")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def card(self) -> AgentCard:
        """The agent's own A2A card (its direct gRPC interface)."""
        return AgentCard(
            name=self.name,
            description=self.description or self.name,
            version="0.1.0",
            supported_interfaces=[
                AgentInterface(
                    url=interface_url(self.endpoint, self._tls),
                    protocol_binding=TransportProtocol.GRPC.value,
                    protocol_version=PROTOCOL_VERSION_CURRENT,
                )
            ],
            capabilities=AgentCapabilities(streaming=True, push_notifications=False),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain", "application/json"],
            skills=self.skills or [_skill(self.description or self.name)],
        )

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve A2A gRPC and health, then register with the hub and keep heartbeating."""
        if self.model is None:
            self.model = OpenAIModel(ModelSettings.for_agent(self.name))
        await asyncio.gather(*(connection.open() for connection in self.mcp))
        self._check_tool_names()
        server = grpc.aio.server(options=[NO_SHARED_PORT])
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(self._handler), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        self.port = listen(server, f"{self.host}:{self.port}", self._tls)
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        if self._hub_address:
            await self.hub.start()
            await self._register(wait_s=30.0)
            self._heartbeat = asyncio.create_task(self._beat(), name=f"{self.name}-heartbeat")
        log.info("agent serving", agent=self.name, endpoint=self.endpoint, hub=self._hub_address)

    async def stop(self) -> None:
        """Stop heartbeating and serving. This replica leaves the hub when another replica of the
        name is up; the last one stays registered so queued work waits for its return."""
        await cancel_and_wait(self._heartbeat)
        if self._heartbeat is not None:
            await self._leave()
        self._heartbeat = None
        if self._server is not None:
            await self._server.stop(grace=2)
            self._server = None
        await self.hub.stop()
        await asyncio.gather(*(connection.close() for connection in self.mcp))
        if self.model is not None:
            await self.model.close()

    async def run_forever(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with self:
            await stop.wait()

    def run(self) -> None:
        """Blocking entry point for `python -m` agents."""
        asyncio.run(self.run_forever())

    async def _register(self, wait_s: float) -> None:
        card = MessageToJson(self.card(), indent=None)
        delay, waited = 0.2, 0.0
        while True:
            try:
                await self.hub.register(card, self.endpoint, replica=True)  # same name = one more replica
                return
            except HubUnavailable:
                if waited >= wait_s:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    async def _leave(self) -> None:
        """Deregister this replica (by its endpoint) if another replica of the name is up; best effort."""
        try:
            async with asyncio.timeout(2):
                record = await self.hub.get_agent(self.name)
                if any(r.state == "up" and r.endpoint != self.endpoint for r in record.replicas):
                    await self.hub.deregister(self.name, self.endpoint)
        except (AgentHubError, TimeoutError) as exc:
            log.warning("replica could not leave the hub", agent=self.name, error=str(exc))

    def _check_tool_names(self) -> None:
        """Two tools of one name would make the model's choice ambiguous: refuse to start."""
        names = list(self.tools)
        for connection in self.mcp:
            names += [t.name for t in connection.tools]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"agent {self.name!r}: tool names used twice: {', '.join(twice)} "
                "(give an MCP server a prefix)"
            )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.hub.heartbeat(self.name, self.endpoint)
            except AgentNotFound:  # the hub forgot this replica (new data dir, expired): register again
                await self._register(wait_s=0)
            except AgentHubError as exc:
                log.warning("heartbeat failed", agent=self.name, error=exc.message)

    # ---- the turn ------------------------------------------------------------------------

    async def handle(self, request: SendMessageRequest) -> AsyncIterator[AgentEvent]:
        """Run one turn for a request, yielding A2A events: the task, progress, the answer."""
        message = request.message
        fields = request.metadata.fields
        task_id = fields["agenthub_task_id"].string_value if "agenthub_task_id" in fields else ""
        task_id = task_id or message.task_id or str(uuid.uuid4())
        context_id = message.context_id or str(uuid.uuid4())
        turn = Turn(self, task_id, context_id, text_of(message))
        token = current_turn.set(turn)
        try:
            yield Task(
                id=task_id,
                context_id=context_id,
                history=[message],
                status=TaskStatus(state=TaskState.TASK_STATE_WORKING, timestamp=now()),
            )
            async for event in self._loop(turn, message):
                yield event
        finally:
            current_turn.reset(token)

    async def _loop(self, turn: Turn, message: Message) -> AsyncIterator[AgentEvent]:
        """Model → tools → model … → answer. A turn made only of calls already made, or the step
        limit, ends the tool phase: the model is then asked for its answer with tools off."""
        assert self.model is not None
        await asyncio.gather(*(connection.refresh() for connection in self.mcp))
        tools = self._offered_tools()
        runner = ToolRunner({t.name: t for t in tools}, self.retry_policy)
        chat = await self._chat(turn, message)
        answer = ""
        final = not tools
        for step in range(self.max_steps + 1):
            final = final or step == self.max_steps
            choice: ToolChoice = "none" if final else self.tool_choice if step == 0 else "auto"
            try:
                reply = await self.model.complete(chat, tools, tool_choice=choice)
            except Exception as exc:  # any model/provider failure becomes a readable failed task
                yield status(
                    turn.task_id, turn.context_id, TaskState.TASK_STATE_FAILED, f"model error: {exc}"
                )
                return
            if final or not reply.tool_calls:
                answer = reply.content
                break
            chat.append(_assistant_calls(reply))
            async for progress in runner.run(reply.tool_calls):
                yield status(
                    turn.task_id, turn.context_id, TaskState.TASK_STATE_WORKING, progress.text, progress.data
                )
            outcomes = runner.outcomes(reply.tool_calls)
            chat += [_tool_result(o) for o in outcomes]
            answer = runner.direct_answer(outcomes)
            if answer:
                break
            final = all(o.duplicate_of for o in outcomes)  # going round in circles: ask for the answer
        answer = answer or f"I could not finish within {self.max_steps} steps."
        yield TaskArtifactUpdateEvent(
            task_id=turn.task_id,
            context_id=turn.context_id,
            last_chunk=True,
            artifact=Artifact(artifact_id=f"{turn.task_id}-answer", name="answer", parts=[Part(text=answer)]),
        )
        yield status(turn.task_id, turn.context_id, TaskState.TASK_STATE_COMPLETED, answer)

    def _offered_tools(self) -> list[Tool]:
        """The local tools and every MCP server's last listed tools (a local name wins)."""
        offered = dict(self.tools)
        for connection in self.mcp:
            for t in connection.tools:
                offered.setdefault(t.name, t)
        return list(offered.values())

    async def _chat(self, turn: Turn, message: Message) -> list[ChatMessage]:
        """The model's input: instructions, the remembered thread, the current request."""
        chat: list[ChatMessage] = (
            [{"role": "system", "content": self.instructions}] if self.instructions else []
        )
        chat += await self._remember(turn, message.message_id)
        chat.append({"role": "user", "content": turn.text})
        return chat

    async def _remember(self, turn: Turn, message_id: str) -> list[ChatMessage]:
        """This agent's earlier turns in the thread, read from the hub, within the memory budget.

        A hub that cannot be read costs the memory, not the answer: the turn goes on without it."""
        if self.memory is None or self.memory.max_messages <= 0:
            return []
        try:
            thread = await self.hub.get_thread(turn.context_id)
        except ThreadNotFound:
            return []
        except AgentHubError as exc:
            log.warning("thread unreadable: answering without memory", agent=self.name, error=exc.message)
            return []
        history = recall(thread, self.name, task_id=turn.task_id, message_id=message_id)
        return fit(history, self.memory)


def _tool_result(outcome: Outcome) -> ChatMessage:
    call = outcome.call
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": outcome.content}


def _assistant_calls(reply: ModelReply) -> ChatMessage:
    """The model's tool-calling turn, as the chat records it."""
    return {
        "role": "assistant",
        "content": reply.content or None,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ],
    }


def _skill(description: str) -> AgentSkill:
    slug = re.sub(r"[^a-z0-9]+", "-", description.lower()).strip("-")[:40] or "default"
    return AgentSkill(id=slug, name=description[:60], description=description, tags=["agenthub"])
