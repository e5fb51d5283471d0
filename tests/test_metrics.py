"""`/metrics`: what Prometheus scrapes from a hub counts exactly what the hub did (calls by method
and code, deliveries by agent and outcome, dead letters), says what is down, and shows consumer lag
draining to zero. A real hub, a real agent, a real scrape over HTTP."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.errors import AgentNotFound
from tests.conftest import eventually
from tests.test_delivery import echo

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(hub: Hub) -> Samples:
    """Every sample of the hub's /metrics, by name and labels (no authentication needed)."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{hub.http_url}/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_calls_deliveries_and_dead_letters(hub: Hub, client: HubClient) -> None:
    async with Agent("worker", tools=[echo], model=ScriptedModel(), hub=hub.address):
        for n in range(3):
            await client.send("worker", f"job {n}")
        with pytest.raises(AgentNotFound):
            await client.send("nobody", "hi")
        await hub.log.produce(Topics(hub.settings.topic_prefix).inbox("worker"), b"not an envelope")

        async def parked() -> bool:
            return sample(await scrape(hub), "agenthub_dead_letters_total", agent="worker") == 1

        assert await eventually(parked, timeout=20)

        async def drained() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            samples = await scrape(hub)
            lags = {
                dict(labels)["group"]: v
                for (name, labels), v in samples.items()
                if name == "agenthub_consumer_lag"
            }
            return samples if "dispatch" in lags and not any(lags.values()) else None

        samples = await eventually(drained, timeout=20)
    assert samples is not None, "consumer lag never drained to 0"
    assert sample(samples, "agenthub_grpc_requests_total", method="SendMessage", code="OK") == 3
    assert sample(samples, "agenthub_grpc_requests_total", method="SendMessage", code="NOT_FOUND") == 1
    assert sample(samples, "agenthub_grpc_request_seconds_count", method="SendMessage") == 4
    assert sample(samples, "agenthub_deliveries_total", agent="worker", state="completed") == 3
    assert sample(samples, "agenthub_delivery_seconds_count", agent="worker") == 3
    assert sample(samples, "agenthub_ready") == 1
    assert not [labels for (name, labels) in samples if name == "agenthub_part_down"]


async def test_metrics_say_what_is_down(hub: Hub) -> None:
    async def ready() -> bool:  # on Kafka, once the consumer groups have joined
        return sample(await scrape(hub), "agenthub_ready") == 1

    assert await eventually(ready, timeout=30)
    hub.readiness.down("thread store", "connection refused")
    try:
        samples = await scrape(hub)
    finally:
        hub.readiness.up("thread store")
    assert sample(samples, "agenthub_ready") == 0
    down = [dict(tags) for (name, tags) in samples if name == "agenthub_part_down"]
    assert down == [{"part": "thread store"}]
    assert await ready()
