"""An agent process for the memory tests: its scripted model answers "noted: <text>" and appends
each input it is given (the chat, as one JSON line) to a journal file, so a test can see what a
freshly started process remembered. `python -m tests.memory_agent --hub H --port P --journal F`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from agenthub.sdk import Agent, Model, ModelReply, Tool
from agenthub.sdk.models import ChatMessage, ToolChoice

INSTRUCTIONS = "You take notes."


class JournalModel(Model):
    """Answers "noted: <current text>" and journals every input."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[Tool], *, tool_choice: ToolChoice = "auto"
    ) -> ModelReply:
        with self.journal.open("a", encoding="utf-8") as out:
            out.write(json.dumps([dict(m) for m in messages]) + "\n")
        return ModelReply(f"noted: {messages[-1]['content']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args()
    model = JournalModel(args.journal)
    Agent("keeper", instructions=INSTRUCTIONS, model=model, hub=args.hub, port=args.port).run()


if __name__ == "__main__":
    main()
