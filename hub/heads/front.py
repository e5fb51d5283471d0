"""The A2A front: a2a-sdk's `RequestHandler`, implemented once, routing every request through the log.

`tenant` names the agent. A send becomes a REQUEST envelope on the agent's inbox; the answer comes
back as EVENT envelopes on this instance's reply topic; reads (GetTask, ListTasks) come from the
thread store, which the recorder keeps in step with the log. gRPC, and later JSON-RPC and REST,
only adapt this class. It never calls an agent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

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
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, VERSION_HEADER
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)

from agenthub.hub import envelopes, task_events
from agenthub.hub.config import HubSettings
from agenthub.hub.heads import validation
from agenthub.hub.heads.resends import Resends
from agenthub.hub.heads.task_view import TaskView, shaped
from agenthub.hub.log._base import Log, Record
from agenthub.hub.loops import Readiness, describe
from agenthub.hub.push.notifier import PushConfigs
from agenthub.hub.recording.recorder import Recorder
from agenthub.hub.routing.registry import Registry
from agenthub.hub.routing.replies import ReplyRouter, Waiter
from agenthub.hub.threads._base import TaskRow, ThreadStore
from agenthub.hub.threads.outage import not_recorded_yet, store_read
from agenthub.hub.topics import Topics
from agenthub.hub.trust.gate import Gate
from agenthub.hub.trust.policy import Action, sees_everything
from agenthub.hub.trust.principal import CURRENT, Principal
from agenthub.hub.trust.principal import Role as PrincipalRole
from agenthub.sdk.errors import (
    AgentNotFound,
    InvalidRequest,
    LogUnavailable,
    MessageTooLarge,
    PermissionDenied,
)
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

ID = re.compile(r"^[A-Za-z0-9._:~@+=/-]{1,128}$")
SENDER_HEADER = "agenthub-sender"
PARENT_HEADER = "agenthub-parent-task"
MAX_PAGE = 100
PATH_AGENT = "agenthub_path_agent"  # context state key: the agent named by an HTTP head's URL


class HubRequestHandler(RequestHandler):
    """Routes A2A requests for many agents through the log.

    Args:
        log: the log backend.
        registry: registered agents.
        store: the thread store (reads).
        recorder: the local recorder (read-your-writes waits).
        replies: this instance's reply router.
        settings: hub settings.
        push: push-notification configs (the hub notifies webhooks for every agent).
        gate: authorization (who may send to which agent, read which task).
        readiness: what is down (a caller waiting while the log is down is told so).
    """

    def __init__(
        self,
        log: Log,
        registry: Registry,
        store: ThreadStore,
        recorder: Recorder,
        replies: ReplyRouter,
        settings: HubSettings,
        push: PushConfigs,
        gate: Gate,
        readiness: Readiness | None = None,
    ) -> None:
        self._log = log
        self._gate = gate
        self._push = push
        self._registry = registry
        self._store = store
        self._recorder = recorder
        self._resends = Resends(store, recorder)
        self._replies = replies
        self._settings = settings
        self._readiness = readiness or Readiness()
        self._topics = Topics(settings.topic_prefix)

    # ---- sending -------------------------------------------------------------------------

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        async with self._gate.in_flight():
            return await self._send(params, context)

    async def _send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        waiter, view = await self._submit(params, context)
        try:
            if params.configuration.return_immediately:
                return view.shaped(params.configuration)
            async for event in self._until_turn_ends(waiter, view):
                if task_events.ends_call(event) and event.WhichOneof("payload") == "message":
                    return event.message
            return view.shaped(params.configuration)
        finally:
            waiter.close()

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        async with self._gate.in_flight():
            waiter, view = await self._submit(params, context)
            try:
                yield view.shaped(params.configuration)
                async for event in self._until_turn_ends(waiter, view):
                    yield _payload(event)
            finally:
                waiter.close()

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        await self._gate.authorize(Action.READ_TASKS)
        row = await self._owned_task(params.id, self._route(params, context))
        if row.task.status.state in task_events.TERMINAL:
            raise UnsupportedOperationError(
                f"task {params.id} is already {TaskState.Name(row.task.status.state)}"
            )
        waiter = self._replies.open(params.id, row.context_id)
        try:
            yield (await self._owned_task(params.id, self._route(params, context))).task
            async for event in self._until_turn_ends(waiter):
                yield _payload(event)
        finally:
            waiter.close()

    async def _submit(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> tuple[Waiter, TaskView]:
        """Put the request in the agent's inbox; the waiter for its replies, and its task so far."""
        agent = self._agent_name(self._route(params, context))
        principal = await self._gate.authorize(Action.SEND, agent)
        self._validate(params)
        if (earlier := await self._resends.earlier(params.message, agent)) is not None:
            return earlier  # a resend (same messageId, same content, same context): its first task
        message = params.message
        parent = _header(context, PARENT_HEADER)
        row: TaskRow | None = None
        agent_task_id = agent_context_id = ""
        if message.task_id:
            row = await self._owned_task(message.task_id, agent)
            if row.task.status.state in task_events.TERMINAL:
                raise UnsupportedOperationError(
                    f"task {message.task_id} is {TaskState.Name(row.task.status.state)}; start a new task"
                )
            if message.context_id and message.context_id != row.context_id:
                raise InvalidParamsError(f"task {message.task_id} belongs to context {row.context_id}")
            task_id, context_id, parent = row.task_id, row.context_id, row.parent_task_id
            agent_task_id, agent_context_id = task_events.agent_ids(row.task)  # the agent continues its task
        else:
            task_id, context_id = envelopes.new_id(), message.context_id or envelopes.new_id()
            if parent:
                await self._check_parent(parent, principal)
        request = SendMessageRequest()
        request.CopyFrom(params)
        # the hub does the notifying: the webhook and its credentials never go to the agent or the log
        request.configuration.ClearField("task_push_notification_config")
        request.message.task_id, request.message.context_id = task_id, context_id
        if request.message.role == Role.ROLE_UNSPECIFIED:
            request.message.role = Role.ROLE_USER
        envelope = envelopes.make(
            Kind.KIND_REQUEST,
            request,
            context_id=context_id,
            task_id=task_id,
            sender=_sender(principal, context),
            recipient=agent,
            parent_task_id=parent,
            reply_topic=self._replies.topic,
            traceparent=_header(context, "traceparent"),
            agent_task_id=agent_task_id,
            agent_context_id=agent_context_id,
        )
        _stamp_deadline(envelope, context)
        if params.configuration.HasField("task_push_notification_config"):  # stored before any update exists
            config = TaskPushNotificationConfig()
            config.CopyFrom(params.configuration.task_push_notification_config)
            config.task_id, config.tenant = task_id, ""
            await self._push.put(config)
        waiter = self._replies.open(task_id, context_id)
        try:
            record = await self._append(self._topics.inbox(agent), envelope, context_id.encode())
        except BaseException:
            waiter.close()
            raise
        self._recorder.expect(task_id, record)
        view = TaskView(row)
        view.apply(envelope, record)
        return waiter, view

    async def _append(self, topic: str, envelope: Envelope, key: bytes | None = None) -> Record:
        """Put a caller's envelope in the log; while the log is down the caller is refused promptly
        (LogUnavailable: UNAVAILABLE / 503), and nothing was accepted."""
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                record = await self._log.produce(
                    topic, envelope.SerializeToString(), key=key, headers=envelopes.headers(envelope)
                )
        except (TimeoutError, *self._log.outages) as exc:
            self._readiness.down("log", f"a send could not be written: {describe(exc)}")
            raise LogUnavailable(
                f"the log is unavailable ({describe(exc)}); nothing was accepted: retry in a few seconds"
            ) from None
        self._readiness.up("log")
        return record

    async def _until_turn_ends(
        self, waiter: Waiter, view: TaskView | None = None
    ) -> AsyncGenerator[StreamResponse]:
        """Events of the waiter's task, once each, up to the one that ends the agent's turn; each is
        projected into `view` before it is yielded, and remembered for read-your-writes."""
        seen: set[str] = set()
        while (reply := await self._next_reply(waiter)) is not None:
            envelope, record = reply
            if envelope.id in seen:
                continue
            seen.add(envelope.id)
            self._recorder.expect(waiter.task_id, record)
            if view is not None:
                view.apply(envelope, record)
            event = envelopes.unpack(envelope, StreamResponse)
            yield event
            if task_events.ends_call(event):
                return

    async def _next_reply(self, waiter: Waiter) -> tuple[Envelope, Record] | None:
        """The waiter's next reply; LogUnavailable instead of waiting forever while the log is down."""
        while True:
            with contextlib.suppress(TimeoutError):
                return await waiter.next(timeout=1.0)
            if "log" in self._readiness.problems():
                raise LogUnavailable(
                    "the log became unavailable while waiting for the answer; the request is kept and"
                    f" will complete: ask for task {waiter.task_id} again in a few seconds"
                )

    def _route(self, params: Any, context: ServerCallContext) -> str:
        """The agent a request names, after checking the A2A-Version it asks for (absent means
        current, another major is refused). On an HTTP head the agent in the URL decides, whatever
        `tenant` the body or query names; on gRPC it is the request's `tenant`."""
        version = _header(context, VERSION_HEADER.lower())
        if version and version.split(".")[0] != PROTOCOL_VERSION_CURRENT.split(".")[0]:
            raise VersionNotSupportedError(
                f"A2A version {version!r} is not supported; this hub speaks {PROTOCOL_VERSION_CURRENT}"
            )
        return str(context.state.get(PATH_AGENT, "") or getattr(params, "tenant", "") or context.tenant)

    def _agent_name(self, tenant: str) -> str:
        name = tenant or self._settings.default_agent
        if not name:
            raise AgentNotFound("no agent named: set the request's `tenant` field to the target agent's name")
        return self._registry.get(name).name

    def _validate(self, params: SendMessageRequest) -> None:
        limit = self._settings.max_message_bytes
        if params.ByteSize() > limit:
            raise MessageTooLarge(f"message is {params.ByteSize()} bytes; this hub accepts at most {limit}")
        message = params.message
        if not params.HasField("message") or not message.parts:
            raise InvalidRequest("message has no parts: send at least one text, file or data part")
        if not any(part.WhichOneof("content") for part in message.parts):
            raise InvalidRequest("message parts are empty: set text, raw, url or data")
        if not message.message_id:
            raise InvalidRequest("message_id is required")
        for field in ("message_id", "context_id", "task_id"):
            value = getattr(message, field)
            if value and not ID.match(value):
                raise InvalidRequest(f"invalid {field} {value[:40]!r}: use 1-128 URL-safe characters")

    # ---- reading -------------------------------------------------------------------------

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        await self._gate.authorize(Action.READ_TASKS)
        row = await self._owned_task(params.id, self._route(params, context))
        return shaped(row.task, params.history_length if params.HasField("history_length") else None, True)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        principal = await self._gate.authorize(Action.READ_TASKS)
        tenant = self._route(params, context)
        agent = self._agent_name(tenant) if tenant else None
        size = params.page_size if params.HasField("page_size") else 50
        if not 1 <= size <= MAX_PAGE:
            raise InvalidParamsError(f"page_size must be between 1 and {MAX_PAGE}")
        offset = validation.page_offset(params.page_token)
        if params.context_id and not ID.match(params.context_id):
            raise InvalidRequest(f"invalid context_id {params.context_id[:40]!r}: use 1-128 URL-safe chars")
        if params.status not in TaskState.values():
            raise InvalidRequest(f"unknown status {params.status}: use an A2A TaskState")
        state = TaskState.Name(params.status) if params.status else None
        await self._recorder.settle_thread(params.context_id)  # "": every thread
        async with store_read():
            page = await self._store.list_tasks(
                agent=agent, context_id=params.context_id or None, state=state, limit=size, offset=offset
            )
        history = params.history_length if params.HasField("history_length") else None
        artifacts = params.include_artifacts if params.HasField("include_artifacts") else False
        rows = page.tasks if sees_everything(principal) else [r for r in page.tasks if await self._owns(r)]
        return ListTasksResponse(
            tasks=[shaped(row.task, history, artifacts) for row in rows],
            next_page_token=str(page.next_offset) if page.next_offset is not None else "",
            page_size=size,
            total_size=page.total,
        )

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        principal = await self._gate.authorize(Action.CANCEL)
        row = await self._owned_task(params.id, self._route(params, context))
        if row.task.status.state in task_events.TERMINAL:
            raise TaskNotCancelableError(
                f"task {params.id} is already {TaskState.Name(row.task.status.state)}"
            )
        waiter = self._replies.open(params.id)
        try:
            cancel = envelopes.make(
                Kind.KIND_CANCEL,
                params,
                task_id=row.task_id,
                context_id=row.context_id,
                sender=_sender(principal, context),
                recipient=row.agent,
            )
            await self._append(self._topics.control, cancel)
            if not await self._canceled_by_dispatcher(waiter):
                await self._cancel_queued(row)
        finally:
            waiter.close()
        return (await self._owned_task(params.id, self._route(params, context))).task

    async def _canceled_by_dispatcher(self, waiter: Waiter, timeout: float = 3.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                async for event in self._until_turn_ends(waiter):
                    if task_events.state_of(event) in task_events.TERMINAL:
                        return True
        except TimeoutError:
            return False
        return False

    async def _cancel_queued(self, row: TaskRow) -> None:
        """No dispatcher holds the task: it is queued, so the front records the cancellation itself."""
        event = task_events.status_event(
            row.task_id, row.context_id, TaskState.TASK_STATE_CANCELED, "canceled before delivery"
        )
        envelope = envelopes.make(
            Kind.KIND_EVENT,
            event,
            task_id=row.task_id,
            context_id=row.context_id,
            sender=row.agent,
            recipient="user",
        )
        record = await self._append(self._replies.topic, envelope, row.context_id.encode())
        self._recorder.expect(row.task_id, record)

    async def _owned_task(self, task_id: str, tenant: str) -> TaskRow:
        if not task_id or not ID.match(task_id):
            raise InvalidRequest(f"invalid task id {task_id[:40]!r}")
        settled = await self._recorder.settle(task_id)
        async with store_read():
            row = await self._store.get_task(task_id)
        if row is None and not settled:
            raise not_recorded_yet(f"task {task_id}")
        if row is None or (tenant and row.agent != tenant) or not await self._owns(row):
            raise TaskNotFoundError(
                f"task {task_id} not found" + (f" for agent {tenant!r}" if tenant else "")
            )
        return row

    async def _owns(self, row: TaskRow) -> bool:
        """Whether the caller may see a task: admins and operators any; an agent the tasks it serves
        or asked for; a user those it asked for (others are "not found", never "forbidden")."""
        principal = CURRENT.get()
        if sees_everything(principal):
            return True
        if principal.role is PrincipalRole.AGENT and row.agent == principal.agent:
            return True
        return await self._requester(row) == principal.sender

    async def _requester(self, row: TaskRow) -> str:
        """Who sent the request that started a task (the sender of its first recorded message)."""
        async with store_read():
            messages = await self._store.thread_messages(row.context_id)
        return next((m.sender for m in messages if m.task_id == row.task_id), "")

    async def _check_parent(self, parent: str, principal: Principal) -> None:
        """A delegation names its parent task; only the agent serving that task may say so."""
        if not principal.authenticated or principal.role is PrincipalRole.ADMIN:
            return
        async with store_read():
            row = await self._store.get_task(parent) if ID.match(parent) else None
        if row is None or principal.role is not PrincipalRole.AGENT or row.agent != principal.agent:
            raise PermissionDenied(
                f"{principal.name} does not serve task {parent[:40]!r}, so it cannot name it as parent"
            )

    # ---- cards and push notifications ----------------------------------------------------

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        """The hub keeps no extended cards: UnsupportedOperation for an agent that declares none
        (A2A 3.3.4), ExtendedAgentCardNotConfigured for one that does; never the public card."""
        await self._gate.authorize(Action.EXTENDED_CARD)
        agent = self._registry.get(self._agent_name(self._route(params, context)))
        if not agent.card.capabilities.extended_agent_card:
            raise UnsupportedOperationError(
                f"agent {agent.name!r} declares no extended agent card (capabilities.extendedAgentCard)"
            )
        raise ExtendedAgentCardNotConfiguredError(
            f"agent {agent.name!r} declares an extended agent card, but none is configured on this hub"
        )

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        await self._gate.authorize(Action.PUSH)
        row = await self._owned_task(params.task_id, self._route(params, context))
        config = TaskPushNotificationConfig()
        config.CopyFrom(params)
        config.task_id, config.tenant = row.task_id, ""
        return await self._push.put(config)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        await self._gate.authorize(Action.READ_TASKS)
        row = await self._owned_task(params.task_id, self._route(params, context))
        return self._push_config(row.task_id, params.id)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        await self._gate.authorize(Action.READ_TASKS)
        row = await self._owned_task(params.task_id, self._route(params, context))
        return ListTaskPushNotificationConfigsResponse(configs=self._push.of(row.task_id))

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        """Idempotent: deleting a config that is already gone succeeds (the task must exist)."""
        await self._gate.authorize(Action.PUSH)
        row = await self._owned_task(params.task_id, self._route(params, context))
        if self._push.get(row.task_id, params.id) is not None:
            await self._push.delete(row.task_id, params.id)

    def _push_config(self, task_id: str, config_id: str) -> TaskPushNotificationConfig:
        config = self._push.get(task_id, config_id)
        if config is None:
            raise TaskNotFoundError(f"task {task_id} has no push notification config {config_id!r}")
        return config


def _sender(principal: Principal, context: ServerCallContext) -> str:
    """Who a message is recorded from: the authenticated principal. Only where no one is
    authenticated (a hub without auth) or for an admin is the caller's `agenthub-sender` believed."""
    if principal.authenticated and principal.role is not PrincipalRole.ADMIN:
        return principal.sender
    return _header(context, SENDER_HEADER) or principal.sender


def _header(context: ServerCallContext, key: str) -> str:
    grpc_context = context.state.get("grpc_context")
    if grpc_context is None:
        return str(context.state.get("headers", {}).get(key, ""))
    for k, v in grpc_context.invocation_metadata() or ():
        if k.lower() == key:
            return v if isinstance(v, str) else v.decode()
    return ""


def _stamp_deadline(envelope: Envelope, context: ServerCallContext) -> None:
    """Carry the caller's gRPC deadline in the envelope: the dispatcher honours it."""
    grpc_context = context.state.get("grpc_context")
    remaining = grpc_context.time_remaining() if grpc_context is not None else None
    if remaining is not None:
        envelope.deadline.FromNanoseconds(time.time_ns() + int(remaining * 1e9))


def _payload(event: StreamResponse) -> Event:
    kind = event.WhichOneof("payload")
    if kind is None:
        raise InvalidParamsError("empty event")
    value: Event = getattr(event, kind)
    return value
