"""How the CLI shows things to people: tables, a thread as a tree, events as lines."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from a2a.types import Message, StreamResponse, Task, TaskState
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from agenthub.hub import task_events
from agenthub.hub.recording import content
from agenthub.sdk.errors import InvalidRequest
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import registry_pb2 as reg
from agenthub.sdk.pb import threads_pb2 as thr

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def as_json(message: ProtoMessage) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short_state(state: str | int) -> str:
    name = TaskState.Name(state) if isinstance(state, int) else state  # type: ignore[arg-type]
    return name.removeprefix("TASK_STATE_").lower()


def task_state(text: str) -> str:
    """The A2A state a user names, short (`failed`) or full (`TASK_STATE_FAILED`), in full;
    InvalidRequest listing the states for a name that is none of them."""
    upper = text.upper().replace("-", "_")
    name = upper if upper.startswith("TASK_STATE_") else f"TASK_STATE_{upper}"
    states = [s for s in TaskState.DESCRIPTOR.values_by_name if s != "TASK_STATE_UNSPECIFIED"]
    if name not in states:
        known = ", ".join(short_state(s) for s in states)
        raise InvalidRequest(f"unknown task state {text!r}: use one of {known}")
    return name


def agents_table(agents: list[reg.AgentRecord]) -> Table:
    """One row per replica (an agent's name on its first), each with its own health."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATE", "BINDING", "ENDPOINT", "REPLICAS"):
        table.add_column(column, no_wrap=True)
    table.add_column("DESCRIPTION", max_width=60)
    table.add_column("LAST SEEN", no_wrap=True)
    for agent in agents:
        description = json.loads(agent.card_json or "{}").get("description", "")
        replicas = list(agent.replicas) or [
            reg.Replica(endpoint=agent.endpoint, binding=agent.binding, state=agent.state,
                        last_heartbeat=agent.last_heartbeat)
        ]  # fmt: skip
        up = sum(r.state == "up" for r in replicas)
        for i, r in enumerate(replicas):
            first = i == 0
            table.add_row(
                agent.name if first else "", r.state, r.binding or "GRPC", r.endpoint,
                f"{up}/{len(replicas)} up" if first else "", description if first else "",
                when(r.last_heartbeat),
            )  # fmt: skip
    return table


class AgentWatch:
    """What `agents watch` shows of each registry change: what happened to the replica it names
    (listed, registered, up, down, removed), told apart by what this watch saw of it before."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], reg.Replica] = {}

    def events(self, change: reg.AgentChange) -> list[tuple[str, reg.Replica]]:
        """(event, replica) for each replica the change is about: every replica of an agent listed
        at the start (a change naming no endpoint), else the one it names."""
        agent = change.agent
        replicas = {r.endpoint: r for r in agent.replicas}
        if not change.endpoint:
            self._seen.update({(agent.name, e): r for e, r in replicas.items()})
            return [("listed", r) for r in replicas.values()]
        key = (agent.name, change.endpoint)
        before = self._seen.pop(key, None)
        if change.removed or change.endpoint not in replicas:
            if change.removed:
                self._seen = {k: r for k, r in self._seen.items() if k[0] != agent.name}
            gone = before or reg.Replica(
                endpoint=change.endpoint, state=agent.state if change.removed else ""
            )
            return [("removed", gone)]
        now = self._seen[key] = replicas[change.endpoint]
        if before is None or before.registered_at != now.registered_at or before.state == now.state:
            return [("registered", now)]
        return [(now.state, now)]

    def lines(self, change: reg.AgentChange) -> list[str]:
        """The change as lines: time, agent, the replica's state and endpoint, what happened."""
        return [
            f"{now_text()}  {change.agent.name:<16} {r.state or '-':<5} {r.endpoint:<22} {event}"
            for event, r in self.events(change)
        ]

    def json_lines(self, change: reg.AgentChange) -> list[str]:
        """The change as JSON lines: the AgentChange with `event` added (one line for each replica
        of an agent listed at the start, with its endpoint)."""
        out = []
        for event, r in self.events(change):
            fields = as_json(change)
            fields.setdefault("endpoint", r.endpoint)
            out.append(json.dumps({"event": event, **fields}))
        return out


def stats_table(stats: op.TopicStatsResponse) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("TOPIC", "PARTITIONS", "RECORDS", "GROUP", "COMMITTED", "LAG"):
        table.add_column(column, no_wrap=True)
    for topic in stats.topics:
        table.add_row(topic.topic, str(topic.partitions), str(topic.records), "", "", "")
        by_group: dict[str, tuple[int, int]] = {}
        for g in topic.groups:
            committed, lag = by_group.get(g.group, (0, 0))
            by_group[g.group] = (committed + g.committed, lag + g.lag)
        for group, (committed, lag) in sorted(by_group.items()):
            table.add_row("", "", "", group, str(committed), str(lag))
    return table


@contextlib.contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    """A file to write (created with its folder), or stdout."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        yield handle


def table(columns: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> Table:
    """A plain table; every column but the last (free text, which wraps) stays on one line."""
    built = Table(box=None, pad_edge=False)
    for column in columns[:-1]:
        built.add_column(column, no_wrap=True)
    built.add_column(columns[-1])
    for row in rows:
        built.add_row(*row)
    return built


def threads_table(threads: list[thr.ThreadSummary]) -> Table:
    return table(
        ("THREAD", "UPDATED", "MESSAGES", "AGENTS", "FIRST MESSAGE"),
        ((t.context_id, when(t.updated_at), str(t.message_count), ",".join(t.agents), _clip(t.first_text, 60))
         for t in threads),
    )  # fmt: skip


def tasks_table(tasks: list[Task]) -> Table:
    return table(
        ("TASK", "AGENT", "STATE", "THREAD", "UPDATED", "LAST MESSAGE"),
        ((t.id, task_events.agent_of(t), short_state(t.status.state), t.context_id, when(t.status.timestamp),
          _clip(content.message_text(t.status.message), 60)) for t in tasks),
    )  # fmt: skip


def print_page(reply: Any, shown: Table | None, *, json: bool, noun: str, filtered: bool) -> None:
    """One page of a listing: its JSON, or its table (None: the page is empty) and, on stderr, the
    option that asks for the next page."""
    if json:
        print_json(as_json(reply))
    elif shown is None:
        console.print(f"no {noun} match" if filtered else f"no {noun} yet")
    else:
        console.print(shown)
        if reply.next_page_token:
            print(f"more: --page {reply.next_page_token}", file=sys.stderr)


def task_lines(task: Task) -> list[str]:
    """A task for people: its state and thread, when it last changed, its last message, artifacts."""
    lines = [
        f"task {task.id} [{short_state(task.status.state)}] · thread {task.context_id}",
        f"agent {task_events.agent_of(task) or '-'} · updated {when(task.status.timestamp)}",
    ]
    if task.status.message.parts:
        lines.append(content.message_text(task.status.message))
    lines += [f"artifact {a.name or a.artifact_id}: {content.artifact_text(a)}" for a in task.artifacts]
    return lines


def thread_tree(thread: thr.Thread) -> Tree:
    """The thread as a tree: each task under the task that delegated it, then its messages and
    artifacts in time order."""
    root = Tree(
        f"[bold]thread {escape(thread.summary.context_id)}[/bold]  ({thread.summary.message_count} messages"
        + (f", {len(thread.artifacts)} artifacts)" if thread.artifacts else ")")
    )
    by_parent: dict[str, list[thr.ThreadTask]] = {}
    for task in thread.tasks:
        by_parent.setdefault(task.parent_task_id, []).append(task)
    lines: dict[str, list[tuple[float, str]]] = {}
    for m in thread.messages:
        lines.setdefault(m.task_id, []).append((_secs(m.created_at), _line(m, m.text)))
    for a in thread.artifacts:
        label = f"artifact {a.name or a.artifact_id}: {a.text}"
        lines.setdefault(a.task_id, []).append((_secs(a.created_at), _line(a, label)))
    known = {t.task_id for t in thread.tasks}
    for task in [t for t in thread.tasks if t.parent_task_id not in known]:
        _task_branch(root, task, by_parent, lines)
    return root


def _line(item: thr.ThreadMessage | thr.ThreadArtifact, text: str) -> str:
    return escape(f"{when(item.created_at)}  {item.sender} → {item.recipient}: {_clip(text, 120)}")


def _task_branch(
    parent: Tree,
    task: thr.ThreadTask,
    by_parent: dict[str, list[thr.ThreadTask]],
    lines: dict[str, list[tuple[float, str]]],
) -> None:
    branch = parent.add(
        f"[bold]{escape(task.agent)}[/bold] task {task.task_id} " + escape(f"[{short_state(task.state)}]")
    )
    items: list[tuple[float, int, Any]] = [(at, 0, line) for at, line in lines.get(task.task_id, [])]
    items += [(_secs(c.created_at), 1, c) for c in by_parent.get(task.task_id, [])]
    for _, kind, item in sorted(items, key=lambda i: (i[0], i[1])):
        if kind:
            _task_branch(branch, item, by_parent, lines)
        else:
            branch.add(item)


def event_line(event: StreamResponse) -> str:
    """One streamed A2A event as a line."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        return f"task {event.task.id} [{short_state(event.task.status.state)}]"
    if kind == "status_update":
        status = event.status_update.status
        text = content.message_text(status.message) if status.HasField("message") else ""
        return f"[{short_state(status.state)}] {text}".rstrip()
    if kind == "artifact_update":
        artifact = event.artifact_update.artifact
        return f"artifact {artifact.name or artifact.artifact_id}: {content.artifact_text(artifact)}"
    if kind == "message":
        return content.message_text(event.message)
    return ""


def answer_of(result: Task | Message) -> str:
    if isinstance(result, Message):
        return content.message_text(result)
    if result.status.message.parts:
        return content.message_text(result.status.message)
    return "\n".join(content.artifact_text(a) for a in result.artifacts)  # answered with artifacts only


def _secs(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def now_text() -> str:
    return datetime.now().strftime("%H:%M:%S")
