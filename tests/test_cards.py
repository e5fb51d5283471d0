"""Card validators follow the card: the ETag changes whenever the published card does, and stays (as
does Last-Modified) while the agent re-registers or heartbeats the same card."""

from __future__ import annotations

import httpx
from google.protobuf.json_format import MessageToJson

from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient, ScriptedModel


def card_json(description: str) -> str:
    return MessageToJson(
        Agent("carded", description=description, hub=None, model=ScriptedModel()).card(), indent=None
    )


async def test_etag_follows_the_card_and_last_modified_stays_while_it_does_not_change(
    hub: Hub, client: HubClient
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    url = f"{hub.http_url}/agents/carded/.well-known/agent-card.json"
    async with httpx.AsyncClient() as http:
        await client.register(card_json("Version one."), endpoint)
        first = await http.get(url)
        assert first.status_code == 200 and first.json()["description"] == "Version one."
        # The hub streams and does push notifications for every agent, whatever its own card says.
        assert first.json()["capabilities"] == {"streaming": True, "pushNotifications": True}
        tag, modified = first.headers["etag"], first.headers["last-modified"]

        await client.register(card_json("Version one."), endpoint)  # the same card again
        await client.heartbeat("carded")
        same = await http.get(url)
        assert (same.headers["etag"], same.headers["last-modified"]) == (tag, modified)
        assert (await http.get(url, headers={"If-None-Match": tag})).status_code == 304

        await client.register(card_json("Version two."), endpoint)
        changed = await http.get(url, headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.json()["description"] == "Version two."
        assert changed.headers["etag"] != tag
        assert (await http.get(url, headers={"If-None-Match": changed.headers["etag"]})).status_code == 304
