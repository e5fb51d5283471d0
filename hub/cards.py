"""Agent cards as the hub publishes them: the agent's own card, reachable through the hub."""

from __future__ import annotations

from a2a.types import AgentCard, AgentInterface
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol

from agenthub.hub.config import HubSettings


def hub_card(card: AgentCard, settings: HubSettings, grpc_port: int | None = None) -> AgentCard:
    """The card with its interfaces replaced by the hub's gRPC endpoint, tenant = agent name."""
    out = AgentCard()
    out.CopyFrom(card)
    del out.supported_interfaces[:]
    out.supported_interfaces.append(
        AgentInterface(
            url=f"{settings.card_host}:{grpc_port or settings.port}",
            protocol_binding=TransportProtocol.GRPC.value,
            tenant=card.name,
            protocol_version=PROTOCOL_VERSION_CURRENT,
        )
    )
    out.capabilities.streaming = True
    out.capabilities.push_notifications = False
    return out
