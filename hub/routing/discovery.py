"""Finding an A2A agent by URL: fetch and validate its card, pick the binding the hub will call.

Any agent that publishes an A2A card can join; nothing AgentHub-specific is asked of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from a2a.types import AgentCard
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from google.protobuf.json_format import ParseDict, ParseError

from agenthub.hub.routing.connections import GRPC, PREFERENCE
from agenthub.sdk.errors import AgentUnavailable, InvalidRequest


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


async def discover(url: str, *, timeout: float = 5.0) -> Found:
    """Fetch and check the card behind `url` (an agent's base URL or its card URL)."""
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"invalid agent URL {url!r}: use http(s)://host[:port][/path]")
    card_url = card_url_of(url)
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
            reply = await http.get(card_url, headers={"Accept": "application/json"})
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"invalid agent URL {url!r}: {exc}") from None
    except httpx.HTTPError as exc:
        raise AgentUnavailable(
            f"cannot fetch the agent card at {card_url}: {exc or type(exc).__name__}"
        ) from None
    if reply.status_code != 200:
        raise AgentUnavailable(f"cannot fetch the agent card at {card_url}: HTTP {reply.status_code}")
    try:
        card = ParseDict(reply.json(), AgentCard(), ignore_unknown_fields=True)
    except (ValueError, ParseError) as exc:
        raise InvalidRequest(f"{card_url} is not an A2A agent card: {exc}") from None
    missing = [field for field in ("name", "supported_interfaces") if not getattr(card, field)]
    if missing:
        raise InvalidRequest(f"{card_url} is not an A2A agent card: no {' or '.join(missing)}")
    binding, endpoint, tenant = best_interface(card, card_url)
    return Found(card, card_url, binding, endpoint, tenant)


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
