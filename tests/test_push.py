"""Push notifications done by the hub for every agent: config RPCs on every binding, ordered webhook
delivery with the configured token and auth header, a webhook that is down or stuck delaying only
its own notifications (retried, given up and recorded), a malformed webhook URL already in the
config topic stopping nothing, and configs that survive a restart and are shared by hub instances.

Webhooks here are real HTTP servers in the test's event loop; a stuck one holds every request
unanswered until the test releases it, so "did not wait for it" is a count, never a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from a2a.types import (
    AuthenticationInfo,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    a2a_pb2_grpc,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agenthub.hub.config import HubSettings
from agenthub.hub.log._base import TopicPartition
from agenthub.hub.push.notifier import MASK
from agenthub.hub.server import Hub, free_port
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel, tool
from agenthub.sdk.errors import AgentHubError
from tests.conftest import eventually, stock_client
from tests.serving import bound, port_of, serving

pytestmark = pytest.mark.usefixtures("reference_agents")
FAST_PUSH = {"push_attempts": 3, "push_backoff_s": 0.05}
V1 = {"A2A-Version": "1.0"}
MALFORMED = ["http://[::1", "ftp://nowhere", "http://", "http://h:99999/x", " http://x/", "hook"]


@pytest.fixture
async def hub(tmp_path, hub_settings: Callable[..., HubSettings]) -> AsyncIterator[Hub]:  # type: ignore[no-untyped-def]
    """The test hub, with few and quick webhook retries so a give-up happens within a test."""
    async with Hub(hub_settings(tmp_path / "hub", **FAST_PUSH)) as running:
        yield running


class Hook:
    """A webhook server: each (headers, body) it answered, in order. `hold()` keeps every request
    waiting unanswered until `release()`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.received: list[tuple[dict, dict]] = []
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def handle(self, request: Request) -> Response:
        body = json.loads(await request.body())
        await self._open.wait()
        self.received.append((dict(request.headers), body))
        return Response(status_code=204)

    def states(self, task_id: str) -> list[str]:
        """The task's updates this webhook answered, in the order they came, each once (a POST
        the hub timed out on and sent again may arrive twice)."""
        bodies = [
            json.dumps(body, sort_keys=True) for _, body in self.received if task_id in json.dumps(body)
        ]
        return [state_of(json.loads(body)) for body in dict.fromkeys(bodies)]

    async def completed(self, task_id: str, timeout: float = 30) -> list[str]:
        """Wait until the task's last update (COMPLETED) arrived; its updates in order."""

        async def done() -> list[str]:
            states = self.states(task_id)
            return states if "TASK_STATE_COMPLETED" in states else []

        states = await eventually(done, timeout=timeout)
        assert states, f"no COMPLETED update for {task_id}: {self.states(task_id)}"
        return states


@contextlib.asynccontextmanager
async def webhook(sock: socket.socket | None = None) -> AsyncIterator[Hook]:
    """A webhook server on a loopback socket (a new one unless given). A test whose webhook is down
    at first holds its port with `bound()`: connections are refused and no other process takes it."""
    sock = sock or bound()
    hook = Hook(port_of(sock))
    app = Starlette(routes=[Route("/hook", hook.handle, methods=["POST"])])
    async with serving(app, sock):
        try:
            yield hook
        finally:
            hook.release()


@contextlib.asynccontextmanager
async def held_agent(hub: Hub) -> AsyncIterator[asyncio.Event]:
    """Agent `held`: its tool answers only once the test sets the event, so its task stays WORKING
    (configs can be added to a running task)."""
    gate = asyncio.Event()

    @tool(return_direct=True, timeout=120)
    async def hold(text: str) -> str:
        """Wait until the test lets the task finish."""
        await gate.wait()
        return f"released: {text}"

    async with Agent("held", tools=[hold], model=ScriptedModel(), hub=hub.address):
        try:
            yield gate
        finally:
            gate.set()  # a test that failed early leaves no call hanging in the agent


def send_with_push(agent: str, text: str, url: str) -> SendMessageRequest:
    request = SendMessageRequest(
        tenant=agent,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
    )
    request.configuration.task_push_notification_config.CopyFrom(
        TaskPushNotificationConfig(
            url=url, token="s3cret", authentication=AuthenticationInfo(scheme="Bearer", credentials="abc")
        )
    )
    return request


async def submit(client: HubClient, agent: str, text: str) -> Task:
    """A non-blocking send: the task once the hub can find it (it is WORKING)."""
    request = SendMessageRequest(
        tenant=agent,
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
    )
    request.configuration.return_immediately = True
    task = (await a2a_pb2_grpc.A2AServiceStub(client.channel).SendMessage(request)).task

    async def working() -> Task | None:
        with contextlib.suppress(AgentHubError):
            found = await client.get_task(agent, task.id)
            return found if found.status.state == TaskState.TASK_STATE_WORKING else None
        return None

    found = await eventually(working, timeout=30)
    assert found, f"task {task.id} never became WORKING"
    return found


def state_of(body: dict) -> str:
    if "statusUpdate" in body:
        return str(body["statusUpdate"]["status"]["state"])
    if "task" in body:
        return str(body["task"]["status"]["state"])
    return "artifact" if "artifactUpdate" in body else "other"


def assert_in_order(states: list[str]) -> None:
    """A calculator task's updates as A2A orders them: working, then the artifact, then completed."""
    assert states[-1] == "TASK_STATE_COMPLETED" and states.count("TASK_STATE_COMPLETED") == 1, states
    assert states.index("TASK_STATE_WORKING") < states.index("artifact") < len(states) - 1, states


async def attempts(hub: Hub, task_id: str) -> list[dict]:
    """Every webhook POST the hub recorded for a task, in order."""
    topic = Topics(hub.settings.topic_prefix).push_attempts
    out: list[dict] = []
    for partition in await hub.log.end_offsets(topic):
        out += [json.loads(r.value) for r in await hub.log.read(TopicPartition(topic, partition), 0, 10_000)]
    return [a for a in out if a["task_id"] == task_id]


async def given_up(hub: Hub, task_id: str, updates: int) -> dict[str, list[dict]]:
    """Wait until the hub gave up on `updates` updates of the task; its attempts per update."""

    async def all_given_up() -> dict[str, list[dict]]:
        per_update: dict[str, list[dict]] = {}
        for attempt in await attempts(hub, task_id):
            per_update.setdefault(attempt["event_id"], []).append(attempt)
        finished = [seen for seen in per_update.values() if seen[-1]["gave_up"]]
        return per_update if len(finished) >= updates else {}

    return await eventually(all_given_up, timeout=60)


async def test_updates_reach_the_webhook_in_order(hub: Hub, client: HubClient) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    async with webhook() as hook:
        task = (await stub.SendMessage(send_with_push("calculator", "6 * 7", hook.url))).task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert_in_order(await hook.completed(task.id))
        headers = hook.received[0][0]
        assert headers["x-a2a-notification-token"] == "s3cret"
        assert headers["authorization"] == "Bearer abc"
        assert all(task.id in json.dumps(body) for _, body in hook.received)
        assert {a["status"] for a in await attempts(hub, task.id)} == {204}

        listing = ListTaskPushNotificationConfigsRequest(tenant="calculator", task_id=task.id)
        (config,) = (await stub.ListTaskPushNotificationConfigs(listing)).configs
        assert (config.url, config.task_id) == (hook.url, task.id)
        same = await stub.GetTaskPushNotificationConfig(
            GetTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
        )
        assert same == config
        await stub.DeleteTaskPushNotificationConfig(
            DeleteTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.GetTaskPushNotificationConfig(
                GetTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_webhook_that_is_down_delays_only_its_own_notifications(hub: Hub, client: HubClient) -> None:
    """A stuck webhook and a dead one (connection refused) next to a live one: the live one gets
    every update in order while the stuck one has answered nothing; the dead one's updates are
    each tried `push_attempts` times, then given up and recorded; the notifier goes on."""
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    async with webhook() as stuck, webhook() as live:
        stuck.hold()
        stuck_task = (await stub.SendMessage(send_with_push("calculator", "1 + 1", stuck.url))).task
        dead_task = (await stub.SendMessage(send_with_push("calculator", "1 + 2", dead))).task
        live_task = (await stub.SendMessage(send_with_push("calculator", "1 + 3", live.url))).task
        assert dead_task.status.message.parts[0].text == "1 + 2 = 3"  # routing never waits for webhooks

        states = await live.completed(live_task.id)
        assert_in_order(states)
        assert stuck.received == []  # every POST to it is still unanswered: nobody waited for it

        per_update = await given_up(hub, dead_task.id, updates=len(states))
        assert len(per_update) == len(states)  # the dead webhook's task has as many updates
        for tried in per_update.values():
            assert [a["attempt"] for a in tried] == [1, 2, 3]
            assert [a["gave_up"] for a in tried] == [False, False, True]
            assert all(a["status"] == 0 and a["error"] and a["url"] == dead for a in tried)

        stuck.release()
        assert await stuck.completed(stuck_task.id) == states

        after = (await stub.SendMessage(send_with_push("calculator", "2 + 2", live.url))).task
        assert await live.completed(after.id) == states  # the notifier still runs


@pytest.mark.parametrize("url", MALFORMED)
async def test_a_webhook_url_that_can_never_work_is_refused(hub: Hub, client: HubClient, url: str) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(send_with_push("calculator", "1 + 1", url))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pushNotificationConfig.url" in str(caught.value.details())
    assert "Error" not in str(caught.value.details())  # no exception class names


async def test_a_config_for_a_missing_task_is_refused(hub: Hub, client: HubClient) -> None:
    stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTaskPushNotificationConfig(
            TaskPushNotificationConfig(
                tenant="calculator", task_id="no-such-task", url="http://127.0.0.1:1/x"
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_push_configs_on_the_http_bindings(hub: Hub, client: HubClient, binding: str) -> None:
    """Create, get, list and delete a config with the stock client on JSON-RPC and HTTP+JSON; the
    webhook gets the running task's updates; a malformed URL is -32602 / 400 naming the field."""
    async with held_agent(hub) as gate, webhook() as hook:
        task = await submit(client, "held", "wait")
        a2a = await stock_client(hub, "held", streaming=False, binding=binding)
        try:
            created = await a2a.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task.id, url=hook.url, token="tok")
            )
            assert created.id and (created.task_id, created.url, created.token) == (task.id, hook.url, MASK)
            fetched = await a2a.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=task.id, id=created.id)
            )
            assert fetched == created
            listed = await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert list(listed.configs) == [created]

            gate.set()
            states = await hook.completed(task.id)
            assert states[-1] == "TASK_STATE_COMPLETED" and "artifact" in states
            assert all(headers["x-a2a-notification-token"] == "tok" for headers, _ in hook.received)

            await a2a.delete_task_push_notification_config(
                DeleteTaskPushNotificationConfigRequest(task_id=task.id, id=created.id)
            )
            after = await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert list(after.configs) == []
        finally:
            await a2a.close()

        async with httpx.AsyncClient(headers=V1) as http:
            if binding == "JSONRPC":
                params = {"taskId": task.id, "url": "http://[::1"}
                body = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "CreateTaskPushNotificationConfig",
                    "params": params,
                }
                reply = (await http.post(f"{hub.http_url}/agents/held/", json=body)).json()
                assert reply["error"]["code"] == -32602
                assert "pushNotificationConfig.url" in reply["error"]["message"]
            else:
                url = f"{hub.http_url}/agents/held/tasks/{task.id}/pushNotificationConfigs"
                reply = await http.post(url, json={"url": "http://[::1"})
                assert reply.status_code == 400
                assert "pushNotificationConfig.url" in reply.text


def restartable(hub_settings: Callable[..., HubSettings], tmp_path, **overrides: object) -> HubSettings:  # type: ignore[no-untyped-def]
    """Settings for a hub a test starts twice: one data dir and instance, and its own topic prefix
    (on Kafka the module's `hub` fixture must not share its consumer groups). The hub binds ports
    of its own picking at each start: ports fixed up front could be taken before it binds them."""
    return hub_settings(tmp_path / "data", topic_prefix=f"r{uuid.uuid4().hex[:10]}", **overrides)


async def test_a_malformed_url_in_the_config_topic_stops_nothing_across_restarts(
    tmp_path,
    hub_settings: Callable[..., HubSettings],  # type: ignore[no-untyped-def]
) -> None:
    """A config an older hub let through (`http://[::1`) sits in the push topic next to a good one
    for the same task, with an unreadable record: the poison one is recorded as given up, the good
    one and every other webhook get their updates, before and after a restart, and nothing is
    sent twice."""
    from agenthub.agents import calculator
    from tests.scripted import calculator_model

    settings = restartable(hub_settings, tmp_path, **FAST_PUSH)
    async with webhook() as hook:
        async with (
            Hub(settings) as hub,
            HubClient(hub.address) as client,
            calculator.build(hub=hub.address, model=calculator_model()),
            held_agent(hub) as gate,
        ):
            stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
            task = await submit(client, "held", "wait")
            poison = TaskPushNotificationConfig(task_id=task.id, id="poison", url="http://[::1")
            key = f"{task.id}/poison".encode()
            push_topic = Topics(settings.topic_prefix).push
            await hub.log.produce(push_topic, poison.SerializeToString(), key=key)
            await hub.log.produce(push_topic, b"\xff\xff\xff", key=b"\xff\xfe")  # not a config at all
            good = await stub.CreateTaskPushNotificationConfig(
                TaskPushNotificationConfig(tenant="held", task_id=task.id, url=hook.url)
            )
            gate.set()
            states = await hook.completed(task.id)
            assert states[-1] == "TASK_STATE_COMPLETED"

            async def poison_given_up() -> list[dict]:
                tried = [a for a in await attempts(hub, task.id) if a["config_id"] == "poison"]
                return tried if len(tried) >= len(states) else []

            tried = await eventually(poison_given_up, timeout=30)
            assert all(a["attempt"] == 1 and a["gave_up"] and "not a valid URL" in a["error"] for a in tried)
            other = (await stub.SendMessage(send_with_push("calculator", "2 + 3", hook.url))).task
            assert_in_order(await hook.completed(other.id))
            answered = len(hook.received)

        async with (
            Hub(settings) as hub,
            HubClient(hub.address) as client,
            calculator.build(hub=hub.address, model=calculator_model()),
        ):
            stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
            listing = ListTaskPushNotificationConfigsRequest(tenant="held", task_id=task.id)
            configs = (await stub.ListTaskPushNotificationConfigs(listing)).configs
            assert {c.id for c in configs} == {"poison", good.id}  # configs survive the restart
            newer = (await stub.SendMessage(send_with_push("calculator", "3 + 4", hook.url))).task
            newer_states = await hook.completed(newer.id)
            assert_in_order(newer_states)
            assert len(hook.received) == answered + len(newer_states)  # nothing committed was re-sent


async def test_updates_still_queued_when_the_hub_stops_are_sent_after_its_restart(
    tmp_path,
    hub_settings: Callable[..., HubSettings],  # type: ignore[no-untyped-def]
) -> None:
    """Offsets are committed only for updates a webhook is done with: a hub stopped while its
    webhook is down (still retrying) sends the task's updates, all and in order, once restarted."""
    from agenthub.agents import calculator
    from tests.scripted import calculator_model

    settings = restartable(hub_settings, tmp_path, push_attempts=1000, push_backoff_s=0.05)
    down = bound()
    url = f"http://127.0.0.1:{port_of(down)}/hook"
    async with (
        Hub(settings) as hub,
        HubClient(hub.address) as client,
        calculator.build(hub=hub.address, model=calculator_model()),
    ):
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        task = (await stub.SendMessage(send_with_push("calculator", "4 + 4", url))).task

        async def retrying() -> bool:
            return any(a["attempt"] >= 2 for a in await attempts(hub, task.id))

        assert await eventually(retrying, timeout=30)
    async with webhook(down) as hook, Hub(settings) as hub:
        assert_in_order(await hook.completed(task.id))


@pytest.mark.parametrize("backend", ["kafka"])
async def test_push_configs_are_shared_by_two_hubs_on_one_log(
    hub: Hub,
    client: HubClient,
    tmp_path,
    hub_settings: Callable[..., HubSettings],  # type: ignore[no-untyped-def]
) -> None:
    """Two hub instances on one Kafka prefix: a config created through one is listed and deleted
    through the other, and updates reach the webhook in order whichever instance notifies."""
    async with (
        Hub(hub_settings(tmp_path / "second", **FAST_PUSH)) as second,
        HubClient(second.address) as other,
        webhook() as hook,
    ):
        # Sent while the second instance's groups still join, a task can move mid-call and run
        # again on the other instance (at-least-once: a second series of updates); not this test's point.
        async def both_joined() -> bool:
            return not second.readiness.problems()

        assert await eventually(both_joined, timeout=60), second.readiness.problems()
        first_stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        second_stub = a2a_pb2_grpc.A2AServiceStub(other.channel)
        task = (await first_stub.SendMessage(send_with_push("calculator", "2 * 3", hook.url))).task
        listing = ListTaskPushNotificationConfigsRequest(tenant="calculator", task_id=task.id)

        async def listed_by_second() -> list[TaskPushNotificationConfig]:
            with contextlib.suppress(grpc.aio.AioRpcError):  # its store may not have the task yet
                return list((await second_stub.ListTaskPushNotificationConfigs(listing)).configs)
            return []

        (config,) = await eventually(listed_by_second, timeout=30)
        assert (config.task_id, config.url) == (task.id, hook.url)
        assert_in_order(await hook.completed(task.id))

        through_second = (await second_stub.SendMessage(send_with_push("calculator", "3 * 3", hook.url))).task
        assert_in_order(await hook.completed(through_second.id))

        await second_stub.DeleteTaskPushNotificationConfig(
            DeleteTaskPushNotificationConfigRequest(tenant="calculator", task_id=task.id, id=config.id)
        )

        async def gone_from_first() -> bool:
            return not (await first_stub.ListTaskPushNotificationConfigs(listing)).configs

        assert await eventually(gone_from_first, timeout=30)
