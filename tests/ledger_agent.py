"""An SDK agent, run as its own process, that writes every delivery to a ledger file (fault drills).

Each request text it is handed is appended as `<pid>\\tdeliver\\t<text>` before the work and
`<pid>\\tdone\\t<text>` after it, with unbuffered writes, so the ledger survives the agent being
killed: a drill reads it to count how many times each request reached a living agent, and in which
life. It answers "counted: <text>" after `--delay` seconds. It keeps no memory of the thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from agenthub.sdk import Agent, ScriptedModel, tool

ANSWER = "counted: {}"


def ledger_agent(name: str, hub: str, ledger: Path, delay: float, port: int = 0) -> Agent:
    """The agent; `ledger` is opened for appending (created if missing)."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(what: str, text: str) -> None:
        os.write(fd, f"{os.getpid()}\t{what}\t{text}\n".encode())

    @tool(return_direct=True, timeout=120)
    async def count(text: str) -> str:
        """Count the delivery and echo the text."""
        note("deliver", text)
        await asyncio.sleep(delay)
        note("done", text)
        return ANSWER.format(text)

    return Agent(name, tools=[count], model=ScriptedModel(), hub=hub, port=port, memory=None, heartbeat_s=0.5)


def read_ledger(ledger: Path) -> list[tuple[int, str, str]]:
    """(pid, "deliver" or "done", text) for every line written so far, in order."""
    if not ledger.exists():
        return []
    out = []
    for line in ledger.read_text().splitlines():
        pid, what, text = line.split("\t", 2)
        out.append((int(pid), what, text))
    return out


def in_flight(ledger: Path) -> int:
    """How many requests the agent holds right now: delivered to its current process, not finished."""
    lines = read_ledger(ledger)
    if not lines:
        return 0
    current = lines[-1][0]
    delivered = sum(1 for pid, what, _ in lines if pid == current and what == "deliver")
    return delivered - sum(1 for pid, what, _ in lines if pid == current and what == "done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="counter")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    ledger_agent(args.name, args.hub, args.ledger, args.delay, args.port).run()


if __name__ == "__main__":
    main()
