"""triage: the front desk. Sends arithmetic to `calculator` and questions about AgentHub to `notes`,
through the hub, in the same thread, so the thread shows each hop."""

from __future__ import annotations

from typing import Any

from agenthub.sdk import Agent, Model, delegate

INSTRUCTIONS = (
    "You are a router. If the question contains numbers to compute, call ask_calculator."
    " Otherwise call ask_notes."
)


def build(
    *, hub: str | None = "127.0.0.1:50051", port: int = 0, model: Model | None = None, **kw: Any
) -> Agent:
    return Agent(
        "triage",
        description="Front desk: routes arithmetic to calculator and AgentHub questions to notes.",
        instructions=INSTRUCTIONS,
        tools=[
            delegate("calculator", "Calculator for numbers."),
            delegate("notes", "AgentHub documentation: how things work."),
        ],
        tool_choice="required",
        skills=["Route a question to the right specialist agent"],
        model=model,
        hub=hub,
        port=port,
        **kw,
    )


if __name__ == "__main__":
    from agenthub.agents._run import run

    run(build, __doc__ or "")
