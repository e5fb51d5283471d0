"""What every head does with a failure, written once.

- A deliberate error (any `A2AError`, AgentHub's included) becomes its codes from the one table in
  `agenthub.sdk.errors`, with a `google.rpc.ErrorInfo` detail naming its reason on gRPC.
- Anything else is a fault of the hub: it is logged here with its details and a short reference,
  and the client gets a generic INTERNAL error carrying only that reference, never an exception
  class, a message from a library or a traceback.
- A gRPC request that is not even a valid protobuf message is a client mistake (INVALID_ARGUMENT).

`GuardedHandler` wraps the A2A `RequestHandler` for every binding; `GuardInterceptor` wraps every
gRPC method of the server (A2A, registry, threads, operator, trust, health) and passes each call
through the gate: its credentials become the call's principal, and the hub's own services are
authorized by method (A2A calls are authorized by the front, which knows their agent and task).
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc
import structlog
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
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
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import A2AError, InternalError
from a2a.utils.grpc_status import status_to_grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from agenthub.hub.heads.interceptors import Behavior, MethodInterceptor
from agenthub.hub.recording.recorder import CALLER_DEADLINE
from agenthub.hub.tls import client_cn
from agenthub.hub.trust import scope
from agenthub.hub.trust.gate import Gate
from agenthub.hub.trust.policy import Action
from agenthub.hub.trust.principal import CURRENT, SOURCE
from agenthub.sdk.errors import INTERNAL_MESSAGE, status_of

log = structlog.get_logger(__name__)
T = TypeVar("T")
P = TypeVar("P")
A2A_DOMAIN = "a2a-protocol.org"
PUBLIC_SERVICES = ("/grpc.health.v1.Health/",)
METHOD_ACTIONS: dict[str, Action] = {
    "/agenthub.v1.RegistryService/RegisterAgent": Action.AGENTS_WRITE,
    "/agenthub.v1.RegistryService/DeregisterAgent": Action.AGENTS_WRITE,
    "/agenthub.v1.RegistryService/Heartbeat": Action.AGENTS_WRITE,
    "/agenthub.v1.RegistryService/ListAgents": Action.AGENTS_READ,
    "/agenthub.v1.RegistryService/GetAgent": Action.AGENTS_READ,
    "/agenthub.v1.RegistryService/WatchAgents": Action.AGENTS_READ,
    "/agenthub.v1.ThreadService/ListThreads": Action.THREADS_READ,
    "/agenthub.v1.ThreadService/GetThread": Action.THREADS_READ,
    "/agenthub.v1.ThreadService/ExportThreads": Action.THREADS_READ,
    "/agenthub.v1.OperatorService/Replay": Action.REPLAY,
    "/agenthub.v1.OperatorService/TopicStats": Action.REPLAY,
    "/agenthub.v1.OperatorService/Rebuild": Action.REPLAY_WRITE,
    "/agenthub.v1.OperatorService/Redrive": Action.REPLAY_WRITE,
    "/agenthub.v1.TrustService/CreateKey": Action.KEYS,
    "/agenthub.v1.TrustService/ListKeys": Action.KEYS,
    "/agenthub.v1.TrustService/RevokeKey": Action.KEYS,
    "/agenthub.v1.TrustService/WhoAmI": Action.WHOAMI,
    "/agenthub.v1.TrustService/ReadAudit": Action.AUDIT,
    "/agenthub.v1.TrustService/AddRule": Action.POLICY_WRITE,
    "/agenthub.v1.TrustService/ListRules": Action.POLICY_READ,
    "/agenthub.v1.TrustService/RemoveRule": Action.POLICY_WRITE,
}
"""The action of each method of the hub's own services; A2A methods are authorized by the front."""
AUDITED = {
    "/agenthub.v1.OperatorService/Rebuild",  # when applied (a dry run writes nothing)
    "/agenthub.v1.OperatorService/Redrive",
    "/agenthub.v1.RegistryService/RegisterAgent",
    "/agenthub.v1.RegistryService/DeregisterAgent",
}


def internal_error(exc: BaseException, where: str) -> InternalError:
    """The generic error a client sees for an unexpected failure; the details go to the log."""
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected failure", where=where, reference=reference, exc_info=exc)
    return InternalError(INTERNAL_MESSAGE.format(reference=reference))


def rich_status(error: A2AError) -> grpc.Status:
    """The error's gRPC status from the one table, with an ErrorInfo naming its reason (the SDK
    reads it back into the same class)."""
    status = status_of(error)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=status.reason, domain=A2A_DOMAIN))
    rich = status_pb2.Status(code=status.grpc.value[0], message=error.message, details=[detail])
    return status_to_grpc(rich)


async def abort(context: grpc.aio.ServicerContext, error: A2AError) -> None:
    """End a gRPC call with the error's rich status (`rich_status`)."""
    rich = rich_status(error)
    context.set_trailing_metadata(tuple(context.trailing_metadata() or ()) + tuple(rich.trailing_metadata))
    await context.abort(rich.code, rich.details)


class GuardedHandler(RequestHandler):
    """The hub's `RequestHandler` as the heads see it: unexpected failures become `internal_error`."""

    def __init__(self, inner: RequestHandler) -> None:
        self._inner = inner

    async def _unary(
        self,
        where: str,
        method: Callable[[P, ServerCallContext], Awaitable[T]],
        params: P,
        context: ServerCallContext,
    ) -> T:
        try:
            return await method(params, context)
        except A2AError:
            raise
        except Exception as exc:
            raise internal_error(exc, where) from None

    async def _stream(
        self,
        where: str,
        method: Callable[[P, ServerCallContext], AsyncGenerator[Event]],
        params: P,
        context: ServerCallContext,
    ) -> AsyncGenerator[Event]:
        try:
            async with aclosing(method(params, context)) as events:
                async for event in events:
                    yield event
        except A2AError:
            raise
        except Exception as exc:
            raise internal_error(exc, where) from None

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        return await self._unary("SendMessage", self._inner.on_message_send, params, context)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        method = self._inner.on_message_send_stream
        async for event in self._stream("SendStreamingMessage", method, params, context):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        async for event in self._stream("SubscribeToTask", self._inner.on_subscribe_to_task, params, context):
            yield event

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return await self._unary("GetTask", self._inner.on_get_task, params, context)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await self._unary("ListTasks", self._inner.on_list_tasks, params, context)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        return await self._unary("CancelTask", self._inner.on_cancel_task, params, context)

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        method = self._inner.on_get_extended_agent_card
        return await self._unary("GetExtendedAgentCard", method, params, context)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        method = self._inner.on_create_task_push_notification_config
        return await self._unary("CreateTaskPushNotificationConfig", method, params, context)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        method = self._inner.on_get_task_push_notification_config
        return await self._unary("GetTaskPushNotificationConfig", method, params, context)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        method = self._inner.on_list_task_push_notification_configs
        return await self._unary("ListTaskPushNotificationConfigs", method, params, context)

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        method = self._inner.on_delete_task_push_notification_config
        await self._unary("DeleteTaskPushNotificationConfig", method, params, context)


class _Undecodable:
    """Stands for a request whose bytes are not the method's protobuf message."""


UNDECODABLE = _Undecodable()


class GuardInterceptor(MethodInterceptor):
    """Wraps every unary-request gRPC method: the gate admits the caller, undecodable requests get
    INVALID_ARGUMENT, deliberate errors their table status, unexpected failures a logged, generic
    INTERNAL."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def deserializer(self, decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        return _tolerant(decode)

    def wrap_unary(self, behavior: Behavior, method: str) -> Behavior:
        return _guard_unary(behavior, method, _admission(self._gate, method))

    def wrap_stream(self, behavior: Behavior, method: str) -> Behavior:
        return _guard_stream(behavior, method, _admission(self._gate, method))


Admit = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


def _admission(gate: Gate, method: str) -> Admit:
    """What the gate checks before a method runs: nothing for health; for everything else the
    caller's credentials (its principal is then the call's), and the action of the hub's methods."""
    action = METHOD_ACTIONS.get(method)

    async def admit(request: Any, context: grpc.aio.ServicerContext) -> None:
        SOURCE.set(context.peer() or "")
        remaining = context.time_remaining()
        CALLER_DEADLINE.set(None if remaining is None else time.monotonic() + remaining)
        if method.startswith(PUBLIC_SERVICES):
            return
        if gate.required:  # without auth every caller is ANONYMOUS (the default): nothing to read
            metadata = {k.lower(): v for k, v in context.invocation_metadata() or ()}
            authorization = metadata.get("authorization")
            bearer = authorization if isinstance(authorization, str) else None
            CURRENT.set(
                await gate.authenticate(bearer, None if bearer else client_cn(context))
            )  # bearer wins
        principal = CURRENT.get()
        if action is not None:
            await gate.authorize(action)
        verb = method.rsplit("/", 1)[1]
        if action is Action.AGENTS_WRITE:
            await gate.require_self(scope.agent_written(method, request), verb)
        scope.narrow_to_own_threads(method, request, principal)
        if method in AUDITED and getattr(request, "apply", True):
            written = scope.agent_written(method, request) if action is Action.AGENTS_WRITE else ""
            await gate.audit.record(verb, written or _resource(request))

    return admit


def _resource(request: Any) -> str:
    """What an audited operator call is about, in a line."""
    return " ".join(f"{f.name}={v}" for f, v in request.ListFields() if f.name != "apply")[:300]


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf raises DecodeError, and others for some corrupt inputs
            return UNDECODABLE

    return decode


async def _refuse_undecodable(request: Any, method: str, context: grpc.aio.ServicerContext) -> None:
    if request is UNDECODABLE:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request to {method} is not a valid protobuf message"
        )


async def _fail(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    """End the call for an exception a servicer let through (an abort passes on untouched)."""
    if isinstance(exc, grpc.aio.BaseError):
        raise exc
    await abort(context, exc if isinstance(exc, A2AError) else internal_error(exc, method))


def _guard_unary(behavior: Callable[..., Any], method: str, admit: Admit) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse_undecodable(request, method, context)
        try:
            await admit(request, context)
            return await behavior(request, context)
        except Exception as exc:
            await _fail(exc, method, context)
            raise

    return guarded


def _guard_stream(
    behavior: Callable[..., Any], method: str, admit: Admit
) -> Callable[..., AsyncIterator[Any]]:
    if not inspect.isasyncgenfunction(behavior):  # writes with context.write (e.g. health Watch)

        async def written(request: Any, context: grpc.aio.ServicerContext) -> None:
            await _refuse_undecodable(request, method, context)
            try:
                await admit(request, context)
                await behavior(request, context)
            except Exception as exc:
                await _fail(exc, method, context)
                raise

        return written  # type: ignore[return-value]

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await _refuse_undecodable(request, method, context)
        try:
            await admit(request, context)
            async with aclosing(behavior(request, context)) as items:
                async for item in items:
                    yield item
        except Exception as exc:
            await _fail(exc, method, context)
            raise

    return guarded
