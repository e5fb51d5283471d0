"""Push promises that mutation testing found unproven (scripts/mutate.py push, the notifier and the
compacted table it follows configs with): a hub instance that starts on a log holding push configs
knows every one of them once its start returns, so the first update it reads for a task is sent to
the task's webhooks (the table waits until it has read up to the topic's end, not until it has read
nothing); the notifier commits what its webhooks are done with while the hub runs, not only when it
stops, so a hub that dies re-sends only what was not delivered (its group's lag is 0 once idle);
and when it stops, it commits what it delivered since its last periodic commit."""

from __future__ import annotations

import asyncio
import json

import pytest
from a2a.types import StreamResponse, TaskPushNotificationConfig, a2a_pb2_grpc
from google.protobuf.json_format import MessageToJson

from agenthub.hub import envelopes
from agenthub.hub.outbound import OutboundPolicy
from agenthub.hub.push.notifier import PushConfigs
from agenthub.hub.secret_box import SecretBox
from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import HubClient
from agenthub.sdk.pb.envelope_pb2 import Kind
from tests.conftest import eventually
from tests.test_delivery import records
from tests.test_push import held_agent, send_with_push, submit, webhook


async def test_an_instance_started_on_stored_configs_knows_them_all_when_its_start_returns(
    hub: Hub, client: HubClient
) -> None:
    """Two configs stored through the hub; a second instance's config table, started on the same
    log, lists both the moment its start returns (no fetch of its own is waited for)."""
    async with webhook() as hook, held_agent(hub) as gate:
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        task = await submit(client, "held", "wait")
        stored = {
            (await stub.CreateTaskPushNotificationConfig(
                TaskPushNotificationConfig(tenant="held", task_id=task.id, url=f"{hook.url}?n={n}")
            )).id
            for n in range(2)
        }  # fmt: skip
        second = PushConfigs(
            hub.log,
            Topics(hub.settings.topic_prefix),
            box=SecretBox.from_settings(hub.settings),
            outbound=OutboundPolicy.from_settings(hub.settings),
        )
        await second.start()
        try:
            assert {c.id for c in second.of(task.id)} == stored
        finally:
            await second.stop()
        gate.set()


async def test_delivered_updates_are_committed_while_the_hub_runs(hub: Hub, client: HubClient) -> None:
    """Two tasks' updates delivered to a webhook: the notifier's group has committed every record
    of the reply topic (no lag) with the hub still running."""
    async with webhook() as hook, held_agent(hub) as gate:
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        for text in ("one", "two"):
            gate.set()
            task = (await stub.SendMessage(send_with_push("held", text, hook.url))).task
            states = await hook.completed(task.id)
            assert states[-1] == "TASK_STATE_COMPLETED"
        replies, group = hub.replies.topic, Topics(hub.settings.topic_prefix).notifier_group

        async def committed() -> bool:
            stats = {t.topic: t for t in (await client.topic_stats()).topics}
            offsets = [(g.committed, g.lag) for g in stats[replies].groups if g.group == group]
            return (
                bool(offsets)
                and sum(c for c, _ in offsets) == stats[replies].records > 0
                and all(lag == 0 for _, lag in offsets)
            )

        assert await eventually(committed, timeout=10), "the notifier never committed what it delivered"


@pytest.mark.parametrize(("backend", "threads_url"), [("embedded", "sqlite")], indirect=True)
async def test_a_notifier_stopped_right_after_a_delivery_commits_it(hub: Hub, client: HubClient) -> None:
    """The notifier stopped moments after its webhook took a task's last update, before its next
    periodic commit: what it delivered is committed at the stop (its group has no lag), so the next
    start sends none of it again."""
    topics = Topics(hub.settings.topic_prefix)
    async with webhook() as hook, held_agent(hub) as gate:
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        gate.set()
        task = (await stub.SendMessage(send_with_push("held", "once", hook.url))).task
        await hook.completed(task.id, timeout=30)
        attempts = len(hook.received)

        async def recorded() -> bool:  # every POST's attempt is in the log before it counts as done
            return sum((await hub.log.end_offsets(topics.push_attempts)).values()) >= attempts

        assert await eventually(recorded, timeout=10, interval=0.002)
        await asyncio.sleep(0.01)  # the delivery is done; the periodic commit is up to 100 ms away
        await hub.notifier.stop()
        ends = await hub.log.end_offsets(hub.replies.topic)
        committed = (await hub.log.group_offsets([hub.replies.topic], topics.notifier_group)).get(
            topics.notifier_group, {}
        )
        assert {tp.partition: o for tp, o in committed.items()} == {p: e for p, e in ends.items() if e}


async def test_a_rerun_requests_events_are_not_pushed_again(hub: Hub, client: HubClient) -> None:
    """A request delivered again after its partition moved mid-call runs again, and its events
    reuse their envelope ids (the thread keeps one copy). Such a copy of a delivered update, with a
    different body, is not POSTed again; an update with a new id after it is."""
    async with webhook() as hook, held_agent(hub) as gate:
        gate.set()
        stub = a2a_pb2_grpc.A2AServiceStub(client.channel)
        task = (await stub.SendMessage(send_with_push("held", "once", hook.url))).task
        await hook.completed(task.id)
        posted = len(hook.received)
        (*_, last) = [
            (record, envelope)
            for record in await records(hub.log, hub.replies.topic)
            if (envelope := envelopes.decode(record)).task_id == task.id and envelope.kind == Kind.KIND_EVENT
        ]
        record, envelope = last
        for seconds, envelope_id in ((1, envelope.id), (2, envelopes.new_id())):  # the copy, then a new one
            event = envelopes.unpack(envelope, StreamResponse)
            event.status_update.status.timestamp.seconds += seconds  # as a second run's would differ
            again = envelopes.make(Kind.KIND_EVENT, event, id=envelope_id, task_id=task.id,
                                   context_id=envelope.context_id)  # fmt: skip
            await hub.log.produce(hub.replies.topic, again.SerializeToString(), key=record.key)

        async def the_new_one_came() -> bool:
            return len(hook.received) > posted

        assert await eventually(the_new_one_came, timeout=30)
        await asyncio.sleep(0.2)
        (_, body), *more = hook.received[posted:]
        assert more == [], "the re-run's copy was POSTed as well"
        assert body == json.loads(MessageToJson(event, indent=None))
