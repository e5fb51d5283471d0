"""The tool half of an agent's loop: run the calls of one model turn, sturdily.

- The calls of one model turn run concurrently.
- Each attempt has a timeout; a transient failure (`TransientToolError`, a timeout, a connection
  error, the hub briefly unreachable) is retried with exponential backoff; a permanent one
  (`ToolError`, bad arguments, anything else) goes back to the model at once as an error result.
- An identical call (same tool, same arguments) runs once per task: asking again gets the model
  the result it already has, and tells it so.
- Every call, retry and result is reported as a `Progress` (the agent turns each into an A2A
  status update, so the thread records it).

Never talks to the model or the hub itself: the agent does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from agenthub.sdk.errors import AgentHubError, AgentUnavailable, HubUnavailable
from agenthub.sdk.models import ToolCall
from agenthub.sdk.tools import Tool, ToolError, TransientToolError

log = structlog.get_logger(__name__)

TRANSIENT = (TransientToolError, TimeoutError, ConnectionError, OSError, HubUnavailable, AgentUnavailable)


@dataclass(frozen=True)
class RetryPolicy:
    """Per-agent defaults for every tool; a tool's own `timeout`/`retries` win over them."""

    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): doubling, capped."""
        return float(min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s))


@dataclass
class Outcome:
    """What one call came to: the text the model gets, and whether the tool succeeded."""

    call: ToolCall
    content: str
    ok: bool
    duplicate_of: str = ""


@dataclass
class Progress:
    """A step worth recording: its text for people, its data part for machines, and the outcome
    when the step is a result."""

    text: str
    data: dict[str, Any]
    outcome: Outcome | None = None


@dataclass
class ToolRunner:
    """Runs the tool calls of one task (one runner per task: it remembers the calls made)."""

    tools: Mapping[str, Tool]
    policy: RetryPolicy
    done: dict[str, Outcome] = field(default_factory=dict)  # by call key: what a repeat gets
    by_id: dict[str, Outcome] = field(default_factory=dict)  # by call id: what each call came to

    def outcomes(self, calls: Sequence[ToolCall]) -> list[Outcome]:
        """What the calls of a finished `run` came to, in the order the model asked."""
        return [self.by_id[call.id] for call in calls]

    def direct_answer(self, outcomes: Sequence[Outcome]) -> str:
        """The first successful result of a `return_direct` tool: the agent's answer, or ""."""
        return next(
            (
                o.content
                for o in outcomes
                if o.ok and not o.duplicate_of and self.tools[o.call.name].return_direct
            ),
            "",
        )

    async def run(self, calls: Sequence[ToolCall]) -> AsyncIterator[Progress]:
        """Run one model turn's calls concurrently, yielding progress as it happens; each call
        ends with exactly one result `Progress` (carrying its `Outcome`)."""
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()
        fresh: dict[str, ToolCall] = {}
        repeats: list[ToolCall] = []
        for call in calls:
            queue.put_nowait(_call_progress(call, self.tools.get(call.name)))
            if _key(call) in self.done or _key(call) in fresh:
                repeats.append(call)
            else:
                fresh[_key(call)] = call
        running = [asyncio.create_task(self._one(call, queue.put_nowait)) for call in fresh.values()]
        finished = asyncio.gather(*running)
        finished.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (progress := await queue.get()) is not None:
                self._note(progress)
                yield progress
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for call in repeats:  # after the fresh calls, so a twin in this turn has its result too
            progress = _result_progress(_repeat(call, self.done[_key(call)]))
            self._note(progress)
            yield progress

    def _note(self, progress: Progress) -> None:
        if progress.outcome is not None:
            self.by_id[progress.outcome.call.id] = progress.outcome
            if not progress.outcome.duplicate_of:
                self.done[_key(progress.outcome.call)] = progress.outcome

    async def _one(self, call: ToolCall, report: Callable[[Progress], None]) -> None:
        """One call, to its result (reported last, after any retries)."""
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(self.tools) or "none"
            outcome = Outcome(call, f"error: no tool named {call.name!r}; available: {available}", False)
        else:
            outcome = await self._attempts(call, tool, report)
        report(_result_progress(outcome))

    async def _attempts(self, call: ToolCall, tool: Tool, report: Callable[[Progress], None]) -> Outcome:
        """Attempts with a timeout each, a transient failure retried after a growing pause."""
        timeout = tool.timeout if tool.timeout is not None else self.policy.timeout_s
        retries = tool.retries if tool.retries is not None else self.policy.retries
        attempt = 1
        while True:
            try:
                async with asyncio.timeout(timeout):
                    return Outcome(call, await tool.call(call.arguments), True)
            except TRANSIENT as exc:
                reason = _describe(exc) or (
                    f"timed out after {timeout:g}s" if isinstance(exc, TimeoutError) else "connection failed"
                )
                if attempt > retries:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    return Outcome(call, f"error: {call.name} failed{tries}: {reason}", False)
                delay = self.policy.delay(attempt)
                report(_retry_progress(call, attempt + 1, retries + 1, reason, delay))
                await asyncio.sleep(delay)
                attempt += 1
            except (ToolError, AgentHubError) as exc:
                return Outcome(call, f"error: {_describe(exc)}", False)
            except Exception as exc:  # a bug in the tool: the model hears of it, the log has the trace
                log.exception("tool raised", tool=call.name)
                return Outcome(call, f"error: {call.name} failed: {exc or 'internal error'}", False)


def _key(call: ToolCall) -> str:
    return f"{call.name}\x00{json.dumps(call.arguments, sort_keys=True, default=str)}"


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AgentHubError) else str(exc)


def _repeat(call: ToolCall, prior: Outcome) -> Outcome:
    """The answer to a call already made in this task: not run again, the model is told."""
    content = (  # the result first: a small model that parrots the start still answers right
        f"{prior.content}\n(You already called {call.name} with these arguments in this task and "
        "that was its result. Do not call it again: answer with it.)"
    )
    return Outcome(call, content, prior.ok, duplicate_of=prior.call.id)


def _call_progress(call: ToolCall, tool: Tool | None) -> Progress:
    data: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if tool is not None and tool.metadata.get("mcp_server"):
        data["mcp_server"] = tool.metadata["mcp_server"]
    return Progress(f"calling {call.name}({json.dumps(call.arguments)})", {"tool_call": data})


def _retry_progress(call: ToolCall, attempt: int, attempts: int, reason: str, delay: float) -> Progress:
    text = f"retrying {call.name} (attempt {attempt} of {attempts}) in {delay:g}s: {reason}"
    data = {"id": call.id, "name": call.name, "attempt": attempt, "of": attempts, "error": reason}
    return Progress(text, {"tool_retry": data})


def _result_progress(outcome: Outcome) -> Progress:
    call = outcome.call
    data: dict[str, Any] = {"id": call.id, "name": call.name, "ok": outcome.ok, "content": outcome.content}
    text = f"{call.name} -> {outcome.content}"
    if outcome.duplicate_of:
        data["duplicate_of"] = outcome.duplicate_of
        text = f"{call.name} already called with these arguments: its earlier result is reused"
    return Progress(text, {"tool_result": data}, outcome)
