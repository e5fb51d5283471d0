"""AgentHub SDK: build agents (`Agent`, `tool`, `delegate`, `MCPServer`, `Memory`), talk to a hub
(`HubClient`), pick models."""

from agenthub.sdk._mcp import MCPServer
from agenthub.sdk._memory import Memory
from agenthub.sdk.agent import Agent, Turn, current_turn, delegate
from agenthub.sdk.client import HubClient
from agenthub.sdk.errors import AgentHubError
from agenthub.sdk.models import Model, ModelReply, ModelSettings, OpenAIModel, ScriptedModel, ToolCall
from agenthub.sdk.tools import Tool, ToolError, TransientToolError, tool

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
