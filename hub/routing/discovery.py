"""Finding an A2A agent by URL: fetch and validate its card, pick the binding the hub will call.

Any agent that publishes an A2A card can join; nothing AgentHub-specific is asked of it. The card
is fetched through the outbound policy (hub/outbound.py): a URL, a redirect or a card interface on
an address the policy refuses is refused, and a failed fetch says only that it failed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import httpx
import structlog
from a2a.types import AgentCard
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from google.protobuf.json_format import ParseDict, ParseError

from agenthub.hub.loops import describe
from agenthub.hub.outbound import (
    MAX_RESPONSE_BYTES,
    REFUSED,
    OutboundPolicy,
    OutboundRefused,
    ResponseTooLarge,
    read_capped,
)
from agenthub.hub.push.webhooks import shown
from agenthub.hub.routing.connections import GRPC, PREFERENCE
from agenthub.sdk.errors import AgentUnavailable, InvalidRequest

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Found:
    """An agent's card and how the hub will reach it."""

    card: AgentCard
    card_url: str
    binding: str
    endpoint: str  # host:port for gRPC, the interface URL for the HTTP bindings
    tenant: str


def card_url_of(url: str) -> str:
    """The card's URL: `url` itself when it names a card, else its well-known path under `url`."""
    if url.endswith(".json"):
        return url
    return url.rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH


async def discover(url: str, *, policy: OutboundPolicy | None = None, timeout: float = 5.0) -> Found:
    """Fetch and check the card behind `url` (an agent's base URL or its card URL), reaching only
    what `policy` allows (default: public addresses only)."""
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"invalid agent URL {url!r}: use http(s)://host[:port][/path]")
    policy = policy or OutboundPolicy()
    card_url = card_url_of(url)
    status, body = await _fetch(card_url, policy, timeout)
    if status != 200:
        raise AgentUnavailable(f"cannot fetch the agent card at {card_url}: HTTP {status}")
    try:
        card = ParseDict(json.loads(body), AgentCard(), ignore_unknown_fields=True)
    except (ValueError, ParseError) as exc:
        raise InvalidRequest(f"{card_url} is not an A2A agent card: {exc}") from None
    missing = [field for field in ("name", "supported_interfaces") if not getattr(card, field)]
    if missing:
        raise InvalidRequest(f"{card_url} is not an A2A agent card: no {' or '.join(missing)}")
    binding, endpoint, tenant = best_interface(card, card_url)
    await _check_interface(policy, binding, endpoint)
    return Found(card, card_url, binding, endpoint, tenant)


async def _fetch(card_url: str, policy: OutboundPolicy, timeout: float) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET of the card, redirects re-checked hop by hop, the body capped
    and the whole fetch bounded by `timeout`. Why a connection failed stays in the hub's log: the
    caller learns only that it failed, not whether a port is closed, filtered or open."""
    try:
        async with (
            asyncio.timeout(timeout),
            policy.client(timeout_s=timeout, follow_redirects=True) as http,
            http.stream("GET", card_url, headers={"Accept": "application/json"}) as reply,
        ):
            return reply.status_code, await read_capped(reply) if reply.status_code == 200 else b""
    except OutboundRefused:
        raise OutboundRefused(f"the agent URL {card_url} is {REFUSED}") from None
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"invalid agent URL {card_url!r}: {exc}") from None
    except ResponseTooLarge:
        raise InvalidRequest(f"the agent card at {card_url} is over {MAX_RESPONSE_BYTES} bytes") from None
    except (httpx.HTTPError, TimeoutError) as exc:
        log.info("agent card fetch failed", url=shown(card_url), error=describe(exc))
        raise AgentUnavailable(f"cannot fetch the agent card at {card_url}") from None


async def _check_interface(policy: OutboundPolicy, binding: str, endpoint: str) -> None:
    """OutboundRefused when the interface the hub would call is on a refused address."""
    url = f"http://{endpoint}" if binding == GRPC else endpoint
    try:
        await policy.check_url(url)
    except OutboundRefused:
        raise OutboundRefused(f"the card's {binding} interface {endpoint} is {REFUSED}") from None
    except httpx.InvalidURL as exc:
        raise InvalidRequest(
            f"the card's {binding} interface {endpoint!r} is not a valid address: {exc}"
        ) from None


def best_interface(card: AgentCard, card_url: str) -> tuple[str, str, str]:
    """(binding, endpoint, tenant) of the card's best interface: gRPC, else JSON-RPC, else HTTP+JSON."""
    offered = {i.protocol_binding.upper(): i for i in card.supported_interfaces}
    for binding in PREFERENCE:
        interface = offered.get(binding.upper())
        if interface is None:
            continue
        if binding == GRPC:
            return binding, interface.url.split("://", 1)[-1].rstrip("/"), interface.tenant
        return binding, interface.url, interface.tenant
    names = ", ".join(sorted(offered)) or "none"
    raise InvalidRequest(f"the card at {card_url} offers no binding the hub speaks (offered: {names})")
