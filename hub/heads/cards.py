"""Agent cards as the hub publishes them: the agent's own card, reachable through the hub on
every binding (gRPC with tenant = name, JSON-RPC and HTTP+JSON under /agents/<name>/).

The published card keeps everything the agent says of itself (name, description, version,
provider, skills, modes, extensions, capabilities); the hub changes only what it provides: the
interfaces (its own), streaming and push notifications (it serves both for every agent). The
agent's signatures are dropped, since they no longer match the card as published.
"""

from __future__ import annotations

import hashlib

from a2a.types import AgentCard, AgentInterface
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol

from agenthub.hub.config import HubSettings


class CardPublisher:
    """Rewrites agents' cards so every interface points at this hub.

    Args:
        settings: hub settings (the host written into cards).
        grpc_port / http_port: the ports the hub listens on.
    """

    def __init__(self, settings: HubSettings, grpc_port: int, http_port: int) -> None:
        self._host = settings.card_host
        self._auth = settings.auth
        self._scheme = "https" if settings.tls else "http"
        self._mtls = settings.tls_client_ca is not None
        self._grpc_port = grpc_port
        self._http_port = http_port

    def base_url(self, name: str) -> str:
        """Where an agent's HTTP heads and card live on this hub."""
        return f"{self._scheme}://{self._host}:{self._http_port}/agents/{name}"

    def publish(self, card: AgentCard) -> AgentCard:
        """The card with its interfaces replaced by the hub's: gRPC first, then JSON-RPC, HTTP+JSON."""
        out = AgentCard()
        out.CopyFrom(card)
        del out.supported_interfaces[:]
        base = self.base_url(card.name)
        out.supported_interfaces.extend(
            [
                AgentInterface(
                    url=f"{self._host}:{self._grpc_port}", protocol_binding=TransportProtocol.GRPC.value,
                    tenant=card.name, protocol_version=PROTOCOL_VERSION_CURRENT,
                ),
                AgentInterface(
                    url=f"{base}/", protocol_binding=TransportProtocol.JSONRPC.value,
                    protocol_version=PROTOCOL_VERSION_CURRENT,
                ),
                AgentInterface(
                    url=base, protocol_binding=TransportProtocol.HTTP_JSON.value,
                    protocol_version=PROTOCOL_VERSION_CURRENT,
                ),
            ]
        )  # fmt: skip
        out.capabilities.streaming = True
        out.capabilities.push_notifications = True
        del out.signatures[:]
        out.ClearField("security_schemes")
        del out.security_requirements[:]
        if self._auth:  # the hub's door, not the agent's: a stock client's auth interceptor reads this
            scheme = out.security_schemes[BEARER]
            scheme.http_auth_security_scheme.scheme = "Bearer"
            scheme.http_auth_security_scheme.bearer_format = "AgentHub API key or JWT"
            scheme.http_auth_security_scheme.description = "Authorization: Bearer <key or token>"
            out.security_requirements.add().schemes[BEARER].SetInParent()
            if self._mtls:  # or, on gRPC, a client certificate alone (README "TLS")
                out.security_schemes[MTLS].mtls_security_scheme.description = MTLS_DESCRIPTION
                out.security_requirements.add().schemes[MTLS].SetInParent()
        return out


BEARER = "agenthub-bearer"
MTLS = "agenthub-mtls"
MTLS_DESCRIPTION = "a client certificate from the hub's client CA; on gRPC its CN is the caller"


def etag(card: AgentCard) -> str:
    """A strong validator of a published card's content."""
    return '"' + hashlib.sha256(card.SerializeToString(deterministic=True)).hexdigest()[:32] + '"'
