"""Agent: build an A2A agent in a few lines — name, card, model, instructions, tools.

The agent serves A2A gRPC on its own port and registers its card with a hub. Each turn runs the
loop model → tool calls → model → answer, streaming status updates as A2A events; every tool call
and result travels as a structured data part, so the hub records it in the thread. Tools may be
Python functions or other agents reached *through the hub* (`delegate`), never directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import signal
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import GrpcHandler, RequestHandler
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    a2a_pb2_grpc,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.errors import PushNotificationNotSupportedError, TaskNotFoundError
from google.protobuf.json_format import MessageToJson, ParseDict
from google.protobuf.struct_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agenthub.sdk._aio import Lifecycle, cancel_and_wait
from agenthub.sdk.client import HubClient
from agenthub.sdk.errors import AgentHubError, AgentNotFound, HubUnavailable
from agenthub.sdk.models import ChatMessage, Model, ModelSettings, OpenAIModel, ToolChoice
from agenthub.sdk.tools import Tool, ToolError, make_tool

log = structlog.get_logger(__name__)

AgentEvent = Task | Message | TaskStatusUpdateEvent | TaskArtifactUpdateEvent


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
            return _text(result)
        if result.status.state != TaskState.TASK_STATE_COMPLETED:
            raise ToolError(
                f"{agent} ended in {TaskState.Name(result.status.state)}: {_text(result.status.message)}"
            )
        return _text(result.status.message) or "\n".join(_text(a) for a in result.artifacts)

    return make_tool(f"ask_{agent}", description, ask, timeout=timeout, return_direct=True, delegate_to=agent)


class Agent(Lifecycle):
    """An A2A agent served over gRPC and registered with a hub.

    Args:
        name: unique agent name (lowercase letters, digits, '-', '_'); also its tenant on the hub.
        description: what the agent does, shown in its card.
        instructions: the system prompt.
        tools: tools the model may call.
        model: the model (default: `OpenAIModel` configured by `ModelSettings.for_agent(name)`).
        skills: card skills, as `AgentSkill`s or plain descriptions.
        hub: the hub's gRPC address; None serves without registering.
        host / port: where to serve A2A gRPC (port 0 = any free port).
        max_steps: model turns per task before giving up.
        tool_choice: "required" makes the first model turn call a tool (no free-text answer).
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        instructions: str = "",
        tools: Sequence[Tool] = (),
        model: Model | None = None,
        skills: Sequence[AgentSkill | str] = (),
        hub: str | None = "127.0.0.1:50051",
        host: str = "127.0.0.1",
        port: int = 0,
        max_steps: int = 4,
        tool_choice: ToolChoice = "auto",
        heartbeat_s: float = 10.0,
    ) -> None:
        self.name = name
        self.description = description
        self.instructions = instructions
        self.tools = {t.name: t for t in tools}
        self.model = model
        self.skills = [s if isinstance(s, AgentSkill) else _skill(s) for s in skills]
        self.host = host
        self.port = port
        self.max_steps = max_steps
        self.tool_choice: ToolChoice = tool_choice
        self.hub = HubClient(hub or "", sender=name)
        self._hub_address = hub
        self._heartbeat_s = heartbeat_s
        self._server: grpc.aio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._handler = _AgentRequestHandler(self)

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
                    url=self.endpoint,
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
        server = grpc.aio.server()
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(self._handler), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        if self._hub_address:
            await self.hub.start()
            await self._register(wait_s=30.0)
            self._heartbeat = asyncio.create_task(self._beat(), name=f"{self.name}-heartbeat")
        log.info("agent serving", agent=self.name, endpoint=self.endpoint, hub=self._hub_address)

    async def stop(self) -> None:
        """Stop heartbeating and serving; stays registered so queued work waits for its return."""
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        if self._server is not None:
            await self._server.stop(grace=2)
            self._server = None
        await self.hub.stop()
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
                await self.hub.register(card, self.endpoint)
                return
            except HubUnavailable:
                if waited >= wait_s:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.hub.heartbeat(self.name)
            except AgentNotFound:  # the hub forgot us (new data dir): register again
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
        token = current_turn.set(Turn(self, task_id, context_id, _text(message)))
        try:
            yield Task(
                id=task_id,
                context_id=context_id,
                history=[message],
                status=TaskStatus(state=TaskState.TASK_STATE_WORKING, timestamp=_now()),
            )
            async for event in self._loop(task_id, context_id, message):
                yield event
        finally:
            current_turn.reset(token)

    async def _loop(self, task_id: str, context_id: str, message: Message) -> AsyncIterator[AgentEvent]:
        assert self.model is not None
        chat: list[ChatMessage] = (
            [{"role": "system", "content": self.instructions}] if self.instructions else []
        )
        chat.append({"role": "user", "content": _text(message)})
        tools = list(self.tools.values())
        answer: str | None = None
        for step in range(self.max_steps):
            choice: ToolChoice = self.tool_choice if step == 0 and tools else "auto"
            try:
                reply = await self.model.complete(chat, tools, tool_choice=choice)
            except Exception as exc:  # any model/provider failure becomes a readable failed task
                yield _status(task_id, context_id, TaskState.TASK_STATE_FAILED, f"model error: {exc}")
                return
            if not reply.tool_calls:
                answer = reply.content
                break
            chat.append(
                {
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
            )
            for call in reply.tool_calls:
                yield _status(
                    task_id,
                    context_id,
                    TaskState.TASK_STATE_WORKING,
                    f"calling {call.name}({json.dumps(call.arguments)})",
                    {"tool_call": {"id": call.id, "name": call.name, "arguments": call.arguments}},
                )
                result, ok = await self._run_tool(call.name, call.arguments)
                yield _status(
                    task_id,
                    context_id,
                    TaskState.TASK_STATE_WORKING,
                    f"{call.name} -> {result}",
                    {"tool_result": {"id": call.id, "name": call.name, "ok": ok, "content": result}},
                )
                chat.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result})
                if ok and self.tools[call.name].return_direct:
                    answer = result
            if answer is not None:
                break
        if answer is None:
            answer = f"I could not finish within {self.max_steps} steps."
        yield TaskArtifactUpdateEvent(
            task_id=task_id,
            context_id=context_id,
            last_chunk=True,
            artifact=Artifact(artifact_id=f"{task_id}-answer", name="answer", parts=[Part(text=answer)]),
        )
        yield _status(task_id, context_id, TaskState.TASK_STATE_COMPLETED, answer)

    async def _run_tool(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        tool = self.tools.get(name)
        if tool is None:
            return f"error: no tool named {name!r}; available: {', '.join(self.tools)}", False
        try:
            return await tool.call(arguments), True
        except ToolError as exc:
            return f"error: {exc}", False
        except AgentHubError as exc:
            return f"error: {exc.message}", False


class _AgentRequestHandler(RequestHandler):
    """The agent's A2A server side: a thin handler over `Agent.handle` (no task manager on the hot path)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[AgentEvent]:
        async for event in self._agent.handle(params):
            self._remember(event)
            yield event

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        task: Task | None = None
        async for event in self._agent.handle(params):
            task = self._remember(event)
        assert task is not None
        return task

    def _remember(self, event: AgentEvent) -> Task:
        """Keep the last 1,000 tasks so direct callers can GetTask; the hub keeps the real record."""
        if isinstance(event, Task):
            self._tasks[event.id] = event
        task = self._tasks[event.task_id] if not isinstance(event, Task) else event
        if isinstance(event, TaskStatusUpdateEvent):
            task.status.CopyFrom(event.status)
            if event.status.message.parts:
                task.history.append(event.status.message)
        elif isinstance(event, TaskArtifactUpdateEvent):
            task.artifacts.append(event.artifact)
        while len(self._tasks) > 1000:
            self._tasks.popitem(last=False)
        return task

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return self._tasks.get(params.id)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        tasks = [
            t for t in self._tasks.values() if not params.context_id or t.context_id == params.context_id
        ]
        return ListTasksResponse(tasks=tasks, page_size=len(tasks), total_size=len(tasks))

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        task = self._tasks.get(params.id)
        if task is None:
            raise TaskNotFoundError(f"task {params.id} not found")
        task.status.CopyFrom(TaskStatus(state=TaskState.TASK_STATE_CANCELED, timestamp=_now()))
        return task

    async def on_subscribe_to_task(
        self, params: Any, context: ServerCallContext
    ) -> AsyncGenerator[AgentEvent]:
        raise TaskNotFoundError("subscribe through the hub")
        yield

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        return self._agent.card()

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _status(
    task_id: str, context_id: str, state: TaskState, text: str, data: dict[str, Any] | None = None
) -> TaskStatusUpdateEvent:
    parts = [Part(text=text)]
    if data is not None:
        parts.append(Part(data=ParseDict(data, Value()), media_type="application/json"))
    message = Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_AGENT,
        task_id=task_id,
        context_id=context_id,
        parts=parts,
    )
    return TaskStatusUpdateEvent(
        task_id=task_id,
        context_id=context_id,
        status=TaskStatus(state=state, message=message, timestamp=_now()),
    )


def _text(item: Message | Artifact) -> str:
    return "\n".join(p.text for p in item.parts if p.WhichOneof("content") == "text")


def _skill(description: str) -> AgentSkill:
    slug = re.sub(r"[^a-z0-9]+", "-", description.lower()).strip("-")[:40] or "default"
    return AgentSkill(id=slug, name=description[:60], description=description, tags=["agenthub"])
