"""The fast JSON printer of thread rows and replayed records prints exactly what protobuf's
`MessageToJson` prints (or fails as it fails), on fuzzed messages of every type it renders and of
types exercising every kind of field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from a2a.types import a2a_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenthub.hub.recording.protojson import to_json
from agenthub.sdk.pb import operator_pb2
from agenthub.sdk.pb.envelope_pb2 import Envelope
from tests.fuzzing import messages

TYPES = [
    a2a_pb2.Message, a2a_pb2.Artifact, a2a_pb2.Task, a2a_pb2.SendMessageRequest, a2a_pb2.StreamResponse,
    Envelope, operator_pb2.ReplayedRecord, operator_pb2.Progress,
    descriptor_pb2.UninterpretedOption, struct_pb2.Value, struct_pb2.Struct, timestamp_pb2.Timestamp,
    duration_pb2.Duration, wrappers_pb2.DoubleValue, wrappers_pb2.Int64Value,
]  # fmt: skip
PAYLOADS = [a2a_pb2.SendMessageRequest, a2a_pb2.StreamResponse, struct_pb2.Value, wrappers_pb2.StringValue]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def outcome(render: Callable[[], str]) -> tuple[str, str]:
    """What rendering gives: its text, or the kind of error it raises and its message."""
    try:
        return "json", render()
    except Exception as exc:  # the comparison is the point: both must fail the same way
        return type(exc).__name__, str(exc)


def assert_same(message: Message) -> None:
    for proto_names in (False, True):
        ours = outcome(lambda: to_json(message, proto_names=proto_names))  # noqa: B023 - used at once
        theirs = outcome(lambda: MessageToJson(message, indent=None, preserving_proto_field_name=proto_names))  # noqa: B023
        assert ours == theirs


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.DESCRIPTOR.full_name)
@FUZZ
@given(data=st.data())
def test_prints_what_protobuf_prints(kind: type[Message], data: st.DataObject) -> None:
    assert_same(data.draw(messages(kind.DESCRIPTOR)))


@FUZZ
@given(data=st.data())
def test_prints_envelopes_with_their_payloads_as_protobuf_does(data: st.DataObject) -> None:
    envelope = data.draw(messages(Envelope.DESCRIPTOR))
    payload = data.draw(st.sampled_from(PAYLOADS))
    envelope.payload.Pack(data.draw(messages(payload.DESCRIPTOR)))
    assert_same(envelope)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (-1, 999_999_999),
        (1_733_500_000, 530_000_000),
        (1_733_500_000, 530_024_000),
        (1_733_500_000, 527_661_094),
        (-62135596800, 0),
        (253402300799, 999_999_999),
        (-62135596801, 0),
        (253402300800, 0),
        (5, -1),
        (5, 1_000_000_000),
    ],
)
def test_prints_timestamps_as_protobuf_does_at_every_precision_and_edge(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert_same(stamp)
    envelope = Envelope(id="e")
    envelope.created_at.CopyFrom(stamp)
    assert_same(envelope)  # through a message field, as records carry them


def test_prints_a_type_that_holds_itself() -> None:
    """A type is compiled while it compiles when it holds itself, directly or in a list."""
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tree.proto", package="tree", syntax="proto3")
    node = file.message_type.add(name="Node")
    node.field.add(name="label", number=1, type=proto.TYPE_STRING, label=proto.LABEL_OPTIONAL)
    node.field.add(name="children", number=2, type=proto.TYPE_MESSAGE, type_name=".tree.Node",
                   label=proto.LABEL_REPEATED)  # fmt: skip
    node.field.add(name="parent", number=3, type=proto.TYPE_MESSAGE, type_name=".tree.Node",
                   label=proto.LABEL_OPTIONAL)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    tree = message_factory.GetMessageClass(pool.FindMessageTypeByName("tree.Node"))(label="a")
    tree.children.add(label="b").children.add(label="c")  # type: ignore[attr-defined]
    tree.parent.label = "p"  # type: ignore[attr-defined]
    assert_same(tree)
