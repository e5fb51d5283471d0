"""An SDK agent's A2A server side: a thin `RequestHandler` over `Agent.handle`, and the port it
listens on (plain text, or TLS when AGENTHUB_AGENT_TLS_CERT and AGENTHUB_AGENT_TLS_KEY are set; with
AGENTHUB_AGENT_TLS_CLIENT_CA too, only callers with a client certificate from that CA, such as the hub).

Deliberately not a2a-sdk's `DefaultRequestHandler` (task manager, event queues, in-memory store):
on these machines it caps a server at a sixth of the rate (DESIGN.md). The hub keeps the real
record of every task; this keeps the last 1,000 only so a direct caller can GetTask.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import RequestHandler
from a2a.types import (
    AgentCard,
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
    SendMessageRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import PushNotificationNotSupportedError, TaskNotFoundError

from agenthub.sdk._events import now
from agenthub.sdk.errors import ConfigError

if TYPE_CHECKING:
    from agenthub.sdk.agent import Agent

AgentEvent = Task | Message | TaskStatusUpdateEvent | TaskArtifactUpdateEvent


# gRPC binds its ports with SO_REUSEPORT by default: a second server on a port already in use
# would share it silently (the kernel splitting connections between the two). Every server here
# turns that off, so a busy port is an error.
NO_SHARED_PORT = ("grpc.so_reuseport", 0)


@dataclass(frozen=True)
class ServingTls:
    """The PEM certificate and key an agent serves A2A gRPC with; its card then says `https://`,
    which is how the hub knows to call it over TLS. With `client_ca`, a client certificate chaining
    to that CA is required (mTLS): only the hub, presenting its AGENTHUB_TLS_CLIENT_CERT, gets in."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_env(cls) -> ServingTls | None:
        """From $AGENTHUB_AGENT_TLS_CERT, $AGENTHUB_AGENT_TLS_KEY and $AGENTHUB_AGENT_TLS_CLIENT_CA;
        None (plain text) when unset."""
        cert, key = os.environ.get("AGENTHUB_AGENT_TLS_CERT"), os.environ.get("AGENTHUB_AGENT_TLS_KEY")
        client_ca = os.environ.get("AGENTHUB_AGENT_TLS_CLIENT_CA") or None
        if not cert and not key:
            if client_ca:
                raise ConfigError(
                    "AGENTHUB_AGENT_TLS_CLIENT_CA needs AGENTHUB_AGENT_TLS_CERT and AGENTHUB_AGENT_TLS_KEY"
                )
            return None
        if not cert or not key:
            raise ConfigError("AGENTHUB_AGENT_TLS_CERT and AGENTHUB_AGENT_TLS_KEY go together")
        return cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)


def listen(server: grpc.aio.Server, address: str, tls: ServingTls | None) -> int:
    """Bind `address` for A2A gRPC, over TLS only when `tls` is given (requiring a client
    certificate from its client CA when it has one); the port bound. ConfigError when another
    server holds the port (make the server with `NO_SHARED_PORT`, or gRPC shares it silently)."""
    credentials = None if tls is None else _credentials(tls)
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's way of saying the bind failed
        raise ConfigError(f"cannot listen on {address} (port in use?)") from None


def _credentials(tls: ServingTls) -> grpc.ServerCredentials:
    try:
        pair = (tls.key.read_bytes(), tls.cert.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the agent's TLS certificate or key: {exc}") from None
    if tls.client_ca is None:
        return grpc.ssl_server_credentials([pair])
    try:
        ca = tls.client_ca.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the agent's TLS client CA: {exc}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


def interface_url(endpoint: str, tls: ServingTls | None) -> str:
    """The URL of the agent's gRPC interface in its card: `host:port`, or `https://host:port`."""
    return f"https://{endpoint}" if tls else endpoint


class AgentRequestHandler(RequestHandler):
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
        task.status.CopyFrom(TaskStatus(state=TaskState.TASK_STATE_CANCELED, timestamp=now()))
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
