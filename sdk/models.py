"""Models behind agents: any OpenAI-compatible endpoint, plus a scripted model for tests.

Every agent talks to its model through the `openai` package, so pointing `base_url` at OpenAI,
Azure OpenAI, vLLM, Ollama or the bundled offline server is configuration only. Small local
models do not emit native tool calls, so `tool_mode="json_schema"` asks for a JSON object that
must match one tool's schema (or a plain reply) and maps it back into tool calls.
"""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agenthub.sdk.tools import Tool

ChatMessage = dict[str, Any]
ToolChoice = Literal["auto", "required", "none"]
REPLY = "reply"


@dataclass
class ToolCall:
    """One call the model asked for."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")


@dataclass
class ModelReply:
    """What the model answered: text, tool calls, or both."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class Model(ABC):
    """A chat model that may call tools."""

    @abstractmethod
    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[Tool], *, tool_choice: ToolChoice = "auto"
    ) -> ModelReply:
        """The model's next turn: with tool_choice="required" it must call a tool, with "none" it
        must answer in text (the tools are still given, since the conversation mentions them)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release connections."""


class ModelSettings(BaseSettings):
    """Where an agent's model lives. Env: AGENTHUB_MODEL_* (per agent: AGENTHUB_<AGENT>_MODEL_*)."""

    model_config = SettingsConfigDict(env_prefix="AGENTHUB_MODEL_", extra="ignore")

    base_url: str = Field("http://127.0.0.1:8765/v1", description="OpenAI-compatible base URL")
    name: str = Field("smollm2-135m", description="model name sent to the endpoint")
    api_key: str = Field("not-needed", description="API key (offline server ignores it)")
    tool_mode: Literal["native", "json_schema"] = Field("json_schema", description="how tools are offered")
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 120.0

    @classmethod
    def for_agent(cls, agent: str) -> ModelSettings:
        """Settings from AGENTHUB_MODEL_*, overridden by AGENTHUB_<AGENT>_MODEL_* where set.

        <AGENT> is the name upper-cased with every other character than A-Z and 0-9 as "_"
        (agent `web-search` reads AGENTHUB_WEB_SEARCH_MODEL_*). A per-agent variable wins even
        when it sets the default value back."""
        base = cls()
        prefix = "AGENTHUB_" + re.sub(r"[^A-Z0-9]", "_", agent.upper()) + "_MODEL_"
        specific = type(
            "AgentModelSettings",
            (cls,),
            {"model_config": SettingsConfigDict(env_prefix=prefix, extra="ignore")},
        )
        overrides = specific().model_dump(exclude_unset=True)
        return base.model_copy(update=overrides)


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible chat completions endpoint."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        import openai

        self.settings = settings or ModelSettings()
        self._client = openai.AsyncOpenAI(
            base_url=self.settings.base_url, api_key=self.settings.api_key, timeout=self.settings.timeout_s
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[Tool], *, tool_choice: ToolChoice = "auto"
    ) -> ModelReply:
        s = self.settings
        common: dict[str, Any] = {"model": s.name, "temperature": s.temperature, "max_tokens": s.max_tokens}
        if tools and s.tool_mode == "native":
            # Chat turns are plain dicts here; the openai package types them as TypedDicts.
            chat: Any = list(messages)
            response = await self._client.chat.completions.create(
                messages=chat,
                tools=[_openai_tool(t) for t in tools],  # type: ignore[misc]
                tool_choice=tool_choice,
                **common,
            )
            message = response.choices[0].message
            calls = [
                ToolCall(c.function.name, json.loads(c.function.arguments or "{}"), c.id)
                for c in message.tool_calls or []
                if c.type == "function"
            ]
            return ModelReply(message.content or "", calls)
        offered = () if tool_choice == "none" else tools  # "none": the reply option alone
        if tools:
            common["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "next_step",
                    "schema": choice_schema(offered, reply=tool_choice != "required"),
                },
            }
        plain: Any = as_plain_chat(messages, offered)
        response = await self._client.chat.completions.create(messages=plain, **common)
        content = response.choices[0].message.content or ""
        return parse_choice(content, offered) if tools else ModelReply(content)


def _openai_tool(t: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
    }


def choice_schema(tools: Sequence[Tool], *, reply: bool = True) -> dict[str, Any]:
    """JSON schema: one `{name, arguments}` object per tool, and (if `reply`) a plain reply."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    if reply:
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": REPLY},
                    "arguments": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                        "required": ["text"],
                    },
                },
                "required": ["name", "arguments"],
            }
        )
    return {"anyOf": options}


def as_plain_chat(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> list[ChatMessage]:
    """The conversation without tool roles (small models' templates lack them), tools listed in the prompt."""
    out: list[ChatMessage] = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"Result of {m.get('name', 'tool')}: {m['content']}"})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    if tools:
        listing = "\n".join(f"- {t.name}: {t.description}" for t in tools)
        note = f"Tools you can call:\n{listing}\n- {REPLY}: answer the user directly."
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}"}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


def parse_choice(content: str, tools: Sequence[Tool]) -> ModelReply:
    """A constrained JSON answer (or JSON found in plain text) as a reply or a tool call."""
    data = _first_json(content)
    if not isinstance(data, dict) or "name" not in data:
        return ModelReply(content.strip())
    name, arguments = data["name"], data.get("arguments") or {}
    if name == REPLY or name not in {t.name for t in tools}:
        text = arguments.get("text") if isinstance(arguments, dict) else None
        return ModelReply(str(text) if text is not None else content.strip())
    return ModelReply("", [ToolCall(name, arguments if isinstance(arguments, dict) else {})])


def _first_json(content: str) -> Any:
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        match = re.search(r"\{.*\}", content, re.DOTALL)
        if match:
            try:
                return json.loads(match.group(0))
            except json.JSONDecodeError:
                return None
    return None


Rule = Callable[[Sequence[ChatMessage], Sequence[Tool]], ModelReply]


class ScriptedModel(Model):
    """A deterministic model for tests: a function from the conversation to the next turn.

    Not a language model. By default it calls the first tool with the user's text as its only
    string argument, then replies with the tool's result. Asked not to call tools
    (tool_choice="none"), its rule is given no tools.
    """

    def __init__(self, rule: Rule | None = None) -> None:
        self._rule = rule or first_tool_then_echo

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[Tool], *, tool_choice: ToolChoice = "auto"
    ) -> ModelReply:
        return self._rule(messages, () if tool_choice == "none" else tools)


def first_tool_then_echo(messages: Sequence[ChatMessage], tools: Sequence[Tool]) -> ModelReply:
    """Scripted rule: call the first tool with the last user text, then reply with its result."""
    last = messages[-1]
    if last["role"] == "tool" or not tools:
        return ModelReply(str(last.get("content", "")))
    schema = tools[0].parameters.get("properties", {})
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    arguments = {next(iter(schema)): text} if schema else {}
    return ModelReply("", [ToolCall(tools[0].name, arguments)])
