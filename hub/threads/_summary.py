"""Thread summaries: one row per thread kept beside its messages, so a listing reads a page, not the
whole messages table.

`threads` holds each thread's first and last message time, message count and first message (its
text, and its `seq` to break ties of time as the messages table does); `thread_names` holds who
sent and who received in it. Both change only in the transaction that inserts the messages they
summarise, from the rows that insert really added, with increments and LEAST/GREATEST so
concurrent writers (PostgreSQL, many hub instances) never lose one another's counts. Never write
them from anywhere else: a rebuild wipes and refills them with the messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agenthub.hub.threads._base import ThreadFilter, ThreadPage, ThreadSummary
from agenthub.hub.trust.principal import is_person

TABLES = ("threads", "thread_names")
RETURNED = "context_id, seq, created_at, sender, recipient, text"  # what a message insert returns

# Fills the summaries from the messages of a store made before they existed (a migration).
BACKFILL = """
    INSERT INTO threads (context_id, started_at, updated_at, message_count, first_seq, first_text)
    SELECT g.context_id, g.started_at, g.updated_at, g.message_count, f.seq, f.text
    FROM (SELECT context_id, MIN(created_at) AS started_at, MAX(created_at) AS updated_at,
                 COUNT(*) AS message_count FROM messages GROUP BY context_id) g
    JOIN messages f ON f.seq = (SELECT x.seq FROM messages x WHERE x.context_id = g.context_id
                                ORDER BY x.created_at, x.seq LIMIT 1);
    INSERT INTO thread_names (context_id, name, role)
    SELECT DISTINCT context_id, sender, 'sender' FROM messages
    UNION SELECT DISTINCT context_id, recipient, 'recipient' FROM messages;
"""


def deltas(inserted: Sequence[Sequence[Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
    """Summary rows and name rows for the messages an insert added (rows shaped as `RETURNED`),
    each sorted by thread so concurrent writers lock rows in the same order."""
    # Per thread: [started_at, first_seq, first_text, updated_at, count] (a list, not an object:
    # this runs once per recorded message).
    threads: dict[str, list[Any]] = {}
    names: set[tuple[str, str, str]] = set()
    add = names.add
    for context_id, seq, created_at, sender, recipient, text in inserted:
        delta = threads.get(context_id)
        if delta is None:
            threads[context_id] = [created_at, seq, text, created_at, 1]
        else:
            if created_at < delta[0] or (created_at == delta[0] and seq < delta[1]):
                delta[0], delta[1], delta[2] = created_at, seq, text
            if created_at > delta[3]:
                delta[3] = created_at
            delta[4] += 1
        add((context_id, sender, "sender"))
        add((context_id, recipient, "recipient"))
    rows = [(c, started, updated, count, seq, text)
            for c, (started, seq, text, updated, count) in threads.items()]  # fmt: skip
    return sorted(rows), sorted(names)


def upsert_sql(least: str, greatest: str) -> str:
    """The statement adding one delta to a thread's summary (`least`/`greatest` from the dialect)."""
    earlier = (
        "(excluded.started_at < threads.started_at OR"
        " (excluded.started_at = threads.started_at AND excluded.first_seq < threads.first_seq))"
    )
    return (
        "INSERT INTO threads (context_id, started_at, updated_at, message_count, first_seq, first_text)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (context_id) DO UPDATE SET"
        " message_count = threads.message_count + excluded.message_count,"
        f" updated_at = {greatest.format(a='threads.updated_at', b='excluded.updated_at')},"
        f" first_text = CASE WHEN {earlier} THEN excluded.first_text ELSE threads.first_text END,"
        f" first_seq = CASE WHEN {earlier} THEN excluded.first_seq ELSE threads.first_seq END,"
        f" started_at = {least.format(a='threads.started_at', b='excluded.started_at')}"
    )


NAMES_SQL = "INSERT INTO thread_names (context_id, name, role) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


def listing_sql(where: ThreadFilter) -> tuple[str, list[Any]]:
    """The page query over `threads` for a filter (LIMIT and OFFSET left as the last two `?`)."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.agent:
        clauses.append("context_id IN (SELECT context_id FROM thread_names WHERE name = ?)")
        params.append(where.agent)
    if where.state:
        clauses.append("context_id IN (SELECT context_id FROM tasks WHERE state = ?)")
        params.append(where.state)
    if where.text:
        # A message or an artifact: an agent that answers with artifacts says it in no message.
        clauses.append(
            "(EXISTS (SELECT 1 FROM messages m WHERE m.context_id = threads.context_id"
            " AND LOWER(m.text) LIKE ? ESCAPE '\\')"
            " OR EXISTS (SELECT 1 FROM artifacts a WHERE a.context_id = threads.context_id"
            " AND LOWER(a.text) LIKE ? ESCAPE '\\'))"
        )
        pattern = f"%{_like_literal(where.text.lower())}%"
        params += [pattern, pattern]
    if where.since is not None:
        clauses.append("updated_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("updated_at < ?")
        params.append(where.until)
    filters = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    query = (
        "SELECT context_id, started_at, updated_at, message_count, first_text FROM threads"
        f"{filters} ORDER BY updated_at DESC, context_id LIMIT ? OFFSET ?"
    )
    return query, params


def page(
    rows: Sequence[Sequence[Any]], agents: Sequence[Sequence[Any]], limit: int, offset: int
) -> ThreadPage:
    """A listing page from the page query's rows (one extra says there is more) and the recipients
    of those threads: every agent that received a message in it (not the people)."""
    names: dict[str, list[str]] = {}
    for context_id, name in agents:
        if name and not is_person(name):
            names.setdefault(context_id, []).append(name)
    threads = [
        ThreadSummary(ctx, started, updated, int(count), sorted(names.get(ctx, [])), first)
        for ctx, started, updated, count, first in rows[:limit]
    ]
    return ThreadPage(threads, offset + limit if len(rows) > limit else None)


def _like_literal(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\': its wildcards and escapes escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
