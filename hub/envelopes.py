"""Building, encoding and decoding the `Envelope` that travels on every routing topic.

Routing metadata is also copied into record headers, so operators can filter without decoding.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.hub.log._base import Headers, Record
from agenthub.sdk._events import now
from agenthub.sdk.pb.envelope_pb2 import Envelope, Kind

M = TypeVar("M", bound=ProtoMessage)


def new_id() -> str:
    return str(uuid.uuid4())


def derived_id(parent: str, name: str) -> str:
    """A deterministic id for something derived from `parent`, so redelivery reproduces it."""
    return str(uuid.uuid5(uuid.UUID(parent), name))


def seconds_of(stamp: Timestamp) -> float:
    """A timestamp as seconds since the epoch, to the microsecond (what the thread store keeps).
    Not `ToDatetime().timestamp()`: that reads the naive UTC datetime as local time."""
    return (stamp.seconds * 1_000_000 + stamp.nanos // 1000) / 1_000_000


def make(kind: Kind.ValueType, payload: ProtoMessage, **fields: object) -> Envelope:
    """A new envelope of `kind` carrying `payload`; `fields` are Envelope fields."""
    envelope = Envelope(kind=kind, **fields)  # type: ignore[arg-type]
    if not envelope.HasField("created_at"):
        envelope.created_at.CopyFrom(now())
    if not envelope.id:
        envelope.id = new_id()
    if not envelope.attempt:
        envelope.attempt = 1
    envelope.payload.Pack(payload)
    return envelope


def unpack(envelope: Envelope, cls: type[M]) -> M:
    """The envelope's payload as `cls`; ValueError if it holds something else. The type is checked
    by its name in the type URL, as `Any.Unpack` does, without Unpack's Python-level calls (every
    recorded record is unpacked)."""
    message, payload = cls(), envelope.payload
    if payload.type_url.rpartition("/")[2] == cls.DESCRIPTOR.full_name:
        message.ParseFromString(payload.value)
    elif not payload.Unpack(message):
        raise ValueError(f"envelope {envelope.id} holds {payload.type_url}, not {cls.__name__}")
    return message


def headers(envelope: Envelope) -> Headers:
    """Record headers that let tools filter without decoding the payload."""
    pairs = {
        "agenthub-id": envelope.id,
        "agenthub-kind": Kind.Name(envelope.kind),
        "agenthub-sender": envelope.sender,
        "agenthub-recipient": envelope.recipient,
        "agenthub-context-id": envelope.context_id,
        "agenthub-task-id": envelope.task_id,
        "traceparent": envelope.traceparent,
    }
    return tuple((k, v.encode()) for k, v in pairs.items() if v)


def decode(record: Record) -> Envelope:
    envelope = Envelope()
    envelope.ParseFromString(record.value)
    return envelope
