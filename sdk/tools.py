"""Tools an agent's model can call: plain Python functions with a JSON schema from their type hints."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel, ValidationError, create_model


class ToolError(Exception):
    """A tool call failed for good; the message is shown to the model and recorded in the thread."""


class TransientToolError(ToolError):
    """A tool call failed for a reason that may pass (a service briefly down): the agent retries it
    with backoff, and shows the model the error only when the retries are spent."""


@dataclass
class Tool:
    """A callable the model may choose, described by a JSON schema of its arguments.

    `return_direct` makes the tool's result the agent's final answer (no further model turn):
    right for exact tools (arithmetic) and delegations, and kind to small models. `timeout` (seconds
    per attempt) and `retries` (extra attempts after a transient failure) default to the agent's
    settings when None. `args_model` validates the arguments before the call; tools whose schema
    comes from elsewhere (MCP servers) have none and are validated by their server.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    args_model: type[BaseModel] | None
    timeout: float | None = None
    retries: int | None = None
    return_direct: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    async def call(self, arguments: dict[str, Any]) -> str:
        """One attempt: validate the arguments, run the tool, return its result as text.

        Timeouts and retries are the caller's (the agent's tool loop), so each attempt is recorded.
        A sync function runs in a worker thread (with the caller's context variables); when its
        attempt times out the thread still runs to its end, as Python threads cannot be stopped."""
        if self.args_model is not None:
            try:
                arguments = dict(self.args_model.model_validate(arguments))
            except ValidationError as exc:
                raise ToolError(
                    f"invalid arguments for {self.name}: {exc.errors(include_url=False)}"
                ) from exc
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**arguments)
        else:  # in a worker thread: a slow sync tool must not stall the agent or its other calls
            result = await asyncio.to_thread(self.fn, **arguments)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, str) else json.dumps(result, default=str)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    return_direct: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    return_direct: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (sync or async) into a `Tool`; its docstring is the description.

    Use bare (`@tool`) or with options (`@tool(timeout=5, retries=2)`); unset options take the
    agent's defaults. Raise `ToolError` for a failure the model should see at once, and
    `TransientToolError` (or let a `ConnectionError`/`OSError` out) for one worth retrying.
    """

    def wrap(func: Callable[..., Any]) -> Tool:
        model = args_model(func)
        return Tool(
            name=name or func.__name__,
            description=description or inspect.getdoc(func) or func.__name__,
            parameters=model.model_json_schema(),
            fn=func,
            args_model=model,
            timeout=timeout,
            retries=retries,
            return_direct=return_direct,
        )

    return wrap(fn) if fn is not None else wrap


def args_model(func: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of a function's parameters (type hints required)."""
    hints = inspect.get_annotations(func, eval_str=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.name not in hints:
            raise TypeError(f"tool parameter {func.__name__}.{param.name} needs a type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    return create_model(f"{func.__name__}_args", **fields)


def make_tool(
    name: str,
    description: str,
    fn: Callable[..., Awaitable[Any]],
    *,
    timeout: float = 300.0,
    return_direct: bool = False,
    **metadata: Any,
) -> Tool:
    """A tool built around an existing callable (used for delegation tools: never retried here,
    the hub already retries deliveries)."""
    model = args_model(fn)
    return Tool(name, description, model.model_json_schema(), fn, model, timeout, 0, return_direct, metadata)
