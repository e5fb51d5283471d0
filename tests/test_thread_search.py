"""Searching threads by text finds the answer wherever the agent put it: in a message, or only in an
artifact (the usual A2A way, and what a thread shows, exports and trains on). The same filter selects
`threads list --search`, ListThreadsRequest.text and `threads export`."""

from __future__ import annotations

import json

from agenthub.hub.server import Hub
from agenthub.sdk import HubClient
from agenthub.sdk.pb import threads_pb2 as thr
from tests.artifact_agent import serve_artifact_agent
from tests.test_cli import agenthub
from tests.test_threads_whole import recorded


async def test_search_finds_text_in_messages_and_in_artifacts(hub: Hub, client: HubClient) -> None:
    async with serve_artifact_agent() as base:
        await client.register_url(base)
        # "answer: ..." is only in the agent's artifact; the user's message says "text ...".
        zebra = (await client.send("artifacts", "text Zebra stripes")).context_id
        lion = (await client.send("artifacts", "text lion mane")).context_id
        # A direct reply: "answer: zebra stripes" is in the agent's message, with no artifact.
        replied = (await client.send("artifacts", "reply zebra stripes")).context_id
        for context_id in (zebra, lion, replied):
            await recorded(client, context_id)
        thread = await client.get_thread(zebra)
        assert [a.text for a in thread.artifacts] == ["answer: Zebra stripes"]
        assert [m.text for m in thread.messages] == ["text Zebra stripes"]

    async def listed(text: str) -> list[str]:
        code, out, err = await agenthub("threads", "list", "--search", text, "--json", "--hub", hub.address)
        assert code == 0, err
        return sorted(t["context_id"] for t in json.loads(out).get("threads", []))

    assert await listed("ANSWER: zebra") == sorted([zebra, replied])  # artifact only, and message
    assert await listed("answer: LION") == [lion]  # artifact only
    assert await listed("answer:") == sorted([zebra, lion, replied])
    assert await listed("text lion") == [lion]  # the user's message still counts
    assert await listed("answer: tiger") == []
    # LIKE wildcards are literal in artifacts as in messages: "_" is not any character, "%" not any run.
    assert await listed("answer_ zebra") == []
    assert await listed("answer%stripes") == []

    reply = await client.list_threads(thr.ListThreadsRequest(text="Answer: Zebra Stripes"))
    assert sorted(t.context_id for t in reply.threads) == sorted([zebra, replied])

    request = thr.ExportThreadsRequest(
        filter=thr.ListThreadsRequest(text="ANSWER: LION MANE"), format=thr.EXPORT_FORMAT_CHAT
    )
    lines = [json.loads(line) async for line in client.export_threads(request)]
    assert [line["metadata"]["context_id"] for line in lines] == [lion]
    assert lines[0]["messages"][-1]["content"] == "answer: lion mane"
