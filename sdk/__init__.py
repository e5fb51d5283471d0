"""AgentHub SDK: build agents (`Agent`, `tool`, `delegate`, `MCPServer`, `Memory`), talk to a hub
(`HubClient`), pick models.

Exports load on first use (PEP 562): importing `agenthub.sdk.pb` or `agenthub.sdk.errors` (as the
CLI does) must not pay for the agent runtime, MCP and the a2a server stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenthub.sdk._mcp import MCPServer
    from agenthub.sdk._memory import Memory
    from agenthub.sdk.agent import Agent, Turn, current_turn, delegate
    from agenthub.sdk.client import HubClient
    from agenthub.sdk.errors import AgentHubError
    from agenthub.sdk.models import Model, ModelReply, ModelSettings, OpenAIModel, ScriptedModel, ToolCall
    from agenthub.sdk.tools import Tool, ToolError, TransientToolError, tool

_HOMES = {
    "Agent": "agent",
    "AgentHubError": "errors",
    "HubClient": "client",
    "MCPServer": "_mcp",
    "Memory": "_memory",
    "Model": "models",
    "ModelReply": "models",
    "ModelSettings": "models",
    "OpenAIModel": "models",
    "ScriptedModel": "models",
    "Tool": "tools",
    "ToolCall": "models",
    "ToolError": "tools",
    "TransientToolError": "tools",
    "Turn": "agent",
    "current_turn": "agent",
    "delegate": "agent",
    "tool": "tools",
}

__all__ = [
    "Agent",
    "AgentHubError",
    "HubClient",
    "MCPServer",
    "Memory",
    "Model",
    "ModelReply",
    "ModelSettings",
    "OpenAIModel",
    "ScriptedModel",
    "Tool",
    "ToolCall",
    "ToolError",
    "TransientToolError",
    "Turn",
    "current_turn",
    "delegate",
    "tool",
]


def __getattr__(name: str) -> Any:
    """Import an export's module the first time the export is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
