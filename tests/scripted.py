"""Scripted (deterministic, not language-model) rules that drive the reference agents in tests."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agenthub.sdk.models import ChatMessage, Model, ModelReply, ScriptedModel, ToolCall, ToolChoice
from agenthub.sdk.tools import Tool

ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)")


def calculator_rule(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
    """Call `calculate` with the first `a op b` found in the question."""
    match = ARITHMETIC.search(messages[-1]["content"])
    if messages[-1]["role"] == "tool" or match is None:
        return ModelReply(str(messages[-1]["content"]))
    a, op, b = match.groups()
    return ModelReply("", [ToolCall("calculate", {"a": float(a), "op": op, "b": float(b)})])


def triage_rule(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
    """Hand arithmetic to the calculator, everything else to notes."""
    if messages[-1]["role"] == "tool":
        return ModelReply(str(messages[-1]["content"]))
    target = "ask_calculator" if ARITHMETIC.search(messages[-1]["content"]) else "ask_notes"
    return ModelReply("", [ToolCall(target, {})])


def calculator_model() -> ScriptedModel:
    return ScriptedModel(calculator_rule)


def triage_model() -> ScriptedModel:
    return ScriptedModel(triage_rule)


class RecordingModel(Model):
    """Wraps any model (scripted or real) and keeps what it was given at each call: the chat,
    the names of the tools offered, and the tool choice."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.inputs: list[dict[str, Any]] = []

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[Tool], *, tool_choice: ToolChoice = "auto"
    ) -> ModelReply:
        self.inputs.append(
            {
                "messages": [dict(m) for m in messages],
                "tools": [t.name for t in tools],
                "tool_choice": tool_choice,
            }
        )
        return await self.inner.complete(messages, tools, tool_choice=tool_choice)

    async def close(self) -> None:
        await self.inner.close()


def contents(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """(role, content) of each chat message: what a test compares."""
    return [(m["role"], m.get("content") or "") for m in messages]
