"""A thread's artifacts as the thread service returns them (agenthub.v1.ThreadArtifact)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.threads._base import ArtifactRow, ThreadStore
from agenthub.sdk.pb import threads_pb2 as thr


async def artifacts(store: ThreadStore, context_id: str) -> list[thr.ThreadArtifact]:
    """Every artifact of the thread, in the order their first chunks were made."""
    return [artifact_pb(row) for row in await store.thread_artifacts(context_id)]


def artifact_pb(a: ArtifactRow) -> thr.ThreadArtifact:
    return thr.ThreadArtifact(
        task_id=a.task_id,
        artifact_id=a.artifact_id,
        context_id=a.context_id,
        parent_task_id=a.parent_task_id,
        sender=a.sender,
        recipient=a.recipient,
        name=a.name,
        text=a.text,
        artifact_json=a.artifact_json,
        created_at=_stamp(a.created_at),
        updated_at=_stamp(a.updated_at),
        topic=a.topic,
        partition=a.partition,
        offset=a.offset,
        traceparent=a.traceparent,
        envelope_id=a.envelope_id,
    )


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
