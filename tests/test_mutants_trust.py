"""Trust checks in the front that mutation testing found unproven (scripts/mutate.py front): an agent
may name as parent only a task it serves itself, never another agent's (whichever way their names
sort) nor a missing one; an admin's `agenthub-sender` is believed (as `_sender` promises)."""

from __future__ import annotations

import grpc
from a2a.types import a2a_pb2_grpc

from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from tests.test_trust import DENIED, OK, Secured, question, secured  # noqa: F401 (the fixture)


async def send_naming_parent(hub: Hub, key: str, parent: str) -> tuple[grpc.StatusCode, str]:
    """(status, details) of a send to calculator, authenticated by `key`, naming `parent`."""
    claim = (("authorization", f"Bearer {key}"), ("agenthub-parent-task", parent))
    async with grpc.aio.insecure_channel(hub.address) as channel:
        try:
            await a2a_pb2_grpc.A2AServiceStub(channel).SendMessage(
                question("1 + 1"), metadata=claim, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return OK, ""


async def test_an_agent_names_as_parent_only_a_task_it_serves(secured: Secured) -> None:  # noqa: F811
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"]) as alice:
        served = {name: (await alice.send(name, "What is 3 + 4?")).id for name in ("calculator", "notes")}
    for agent, other in (("notes", "calculator"), ("calculator", "notes")):
        for parent in (served[other], "no-such-task"):
            code, details = await send_naming_parent(hub, keys[f"{agent}-key"], parent)
            assert (code, details) == (
                DENIED,
                f"{agent}-key does not serve task {parent!r}, so it cannot name it as parent",
            ), (agent, parent)
    assert (await send_naming_parent(hub, keys["calculator-key"], served["calculator"]))[0] == OK


async def test_an_admins_sender_header_is_believed(secured: Secured) -> None:  # noqa: F811
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["admin"], sender="ops-console") as admin:
        task = await admin.send("calculator", "What is 2 + 2?")
        thread = await admin.get_thread(task.context_id)
    assert [(m.sender, m.recipient) for m in thread.messages if m.role == "user"] == [
        ("ops-console", "calculator")
    ]
