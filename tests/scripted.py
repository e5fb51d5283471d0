"""Scripted (deterministic, not language-model) rules that drive the reference agents in tests."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agenthub.sdk.models import ChatMessage, ModelReply, ScriptedModel, ToolCall
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
