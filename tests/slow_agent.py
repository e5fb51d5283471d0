"""A test agent run as its own process, so tests can SIGKILL it mid-task.

Its one tool sleeps for SLOW_AGENT_SECONDS (default 30) before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from agenthub.sdk import Agent, ScriptedModel, tool


@tool(return_direct=True, timeout=120)
async def wait_then_answer(text: str) -> str:
    """Sleep, then echo the text."""
    await asyncio.sleep(float(os.environ.get("SLOW_AGENT_SECONDS", "30")))
    return f"done: {text}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Agent("slow", tools=[wait_then_answer], model=ScriptedModel(), hub=args.hub, port=args.port).run()


if __name__ == "__main__":
    main()
