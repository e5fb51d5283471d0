"""AgentHub SDK: build agents (`Agent`, `tool`, `delegate`), talk to a hub (`HubClient`), pick models."""

from agenthub.sdk.agent import Agent, Turn, current_turn, delegate
from agenthub.sdk.client import HubClient
from agenthub.sdk.errors import AgentHubError
from agenthub.sdk.models import Model, ModelReply, ModelSettings, OpenAIModel, ScriptedModel, ToolCall
from agenthub.sdk.tools import Tool, ToolError, tool

__all__ = [
    "Agent",
    "AgentHubError",
    "HubClient",
    "Model",
    "ModelReply",
    "ModelSettings",
    "OpenAIModel",
    "ScriptedModel",
    "Tool",
    "ToolCall",
    "ToolError",
    "Turn",
    "current_turn",
    "delegate",
    "tool",
]
