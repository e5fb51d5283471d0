"""notes: answers questions from a small local corpus of notes about AgentHub (agents/corpus/*.md).

Search is plain keyword overlap over paragraphs: no embeddings, no network, deterministic.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from agenthub.sdk import Agent, Model, current_turn, tool

INSTRUCTIONS = "You answer questions about AgentHub by calling search_notes."
WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "you",
        "your",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


@cache
def corpus() -> list[tuple[str, str]]:
    """(title, paragraph) pairs of every note shipped with the package."""
    out: list[tuple[str, str]] = []
    for entry in sorted(
        resources.files("agenthub.agents").joinpath("corpus").iterdir(), key=lambda e: e.name
    ):
        if not entry.name.endswith(".md"):
            continue
        text = entry.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip()
        out.extend((title, p.strip()) for p in text.split("\n\n")[1:] if p.strip())
    return out


def best_paragraph(query: str) -> str:
    """The paragraph of the notes sharing the most words with the query, with its note's title."""
    wanted = _words(query)
    scored = [(len(wanted & _words(p)), t, p) for t, p in corpus()]
    best = max(scored, key=lambda s: s[0], default=(0, "", ""))
    if best[0] == 0:
        return "I found nothing about that in my notes."
    return f"{best[2]} (from: {best[1]})"


@tool(return_direct=True)
def search_notes() -> str:
    """Search the AgentHub notes for the user's question."""
    return best_paragraph(current_turn.get().text)


def build(
    *, hub: str | None = "127.0.0.1:50051", port: int = 0, model: Model | None = None, **kw: Any
) -> Agent:
    return Agent(
        "notes",
        description="Answers questions about AgentHub from its notes: threads, agents, replay, Kafka.",
        instructions=INSTRUCTIONS,
        tools=[search_notes],
        tool_choice="required",
        skills=["Search the AgentHub notes"],
        model=model,
        hub=hub,
        port=port,
        **kw,
    )


if __name__ == "__main__":
    from agenthub.agents._run import run

    run(build, __doc__ or "")
