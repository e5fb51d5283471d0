"""The A2A events an SDK agent emits, built in one place (status updates with their data parts)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from a2a.types import Artifact, Message, Part, Role, TaskState, TaskStatus, TaskStatusUpdateEvent
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp


def now() -> Timestamp:
    """The current time (5x cheaper than `Timestamp.GetCurrentTime`, which goes through datetime:
    every envelope and event gets one)."""
    nanos = time.time_ns()
    return Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def status(
    task_id: str, context_id: str, state: TaskState, text: str, data: dict[str, Any] | None = None
) -> TaskStatusUpdateEvent:
    """A status update whose message carries `text` and, for machines, `data` as a JSON part."""
    parts = [Part(text=text)]
    if data is not None:
        parts.append(Part(data=ParseDict(data, Value()), media_type="application/json"))
    message = Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_AGENT,
        task_id=task_id,
        context_id=context_id,
        parts=parts,
    )
    return TaskStatusUpdateEvent(
        task_id=task_id,
        context_id=context_id,
        status=TaskStatus(state=state, message=message, timestamp=now()),
    )


def text_of(item: Message | Artifact) -> str:
    """The text parts of a message or artifact, joined."""
    return "\n".join(p.text for p in item.parts if p.WhichOneof("content") == "text")
