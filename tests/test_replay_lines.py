"""Replay's JSON lines (what `agenthub replay` prints from raw records, and a raw thread export
holds) say exactly what the ReplayedRecord messages of the same records say, for any envelope, key
and headers, and for records that are not envelopes; a raw record carries its record whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from a2a.types import a2a_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenthub.hub.cli import replaying
from agenthub.hub.log._base import Record
from agenthub.hub.log.embedded import EmbeddedLog
from agenthub.hub.operators.operator import Counter, Operator
from agenthub.hub.operators.records import Scanned, raw_json, raw_records, record_json, replayed
from agenthub.hub.routing.registry import Registry
from agenthub.hub.threads._base import ThreadStore
from agenthub.hub.topics import Topics
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb.envelope_pb2 import Envelope
from tests.fuzzing import messages

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
TEXT = st.text(max_size=12)
HEADERS = st.lists(st.tuples(TEXT, st.binary(max_size=12)), max_size=4).map(tuple)


def as_record_says(record: op.ReplayedRecord) -> dict[str, Any]:
    """The line the replay JSONL schema makes of a ReplayedRecord."""
    line = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp": record.timestamp.ToJsonString(), "key": record.key, "headers": dict(record.headers),
        "envelope": json.loads(record.envelope_json) if record.envelope_json else None,
    }  # fmt: skip
    return {**line, "error": record.error} if record.error else line


def assert_same(item: Scanned) -> None:
    line = record_json(item)
    assert b"\n" not in line  # one record, one line
    assert json.loads(line) == as_record_says(replayed(item))


@FUZZ
@given(
    data=st.data(),
    key=st.none() | st.binary(max_size=12),
    headers=HEADERS,
    offset=st.integers(0, 2**40),
    timestamp_ms=st.integers(-(2**40), 2**45),
)
def test_a_line_says_what_the_replayed_record_says(
    data: st.DataObject, key: bytes | None, headers: Any, offset: int, timestamp_ms: int
) -> None:
    envelope = data.draw(messages(Envelope.DESCRIPTOR))
    envelope.payload.Pack(data.draw(messages(a2a_pb2.SendMessageRequest.DESCRIPTOR)))
    record = Record("agenthub.inbox.é", 3, offset, key, envelope.SerializeToString(), timestamp_ms, headers)
    assert_same(Scanned(record))
    carried = op.RawRecords.FromString(raw_records([record]).SerializeToString())  # as the wire has it
    assert raw_json(carried.records[0]) == record_json(Scanned(record))  # what the CLI prints of it


def test_a_record_that_is_not_an_envelope_has_its_error_and_no_envelope() -> None:
    item = Scanned(Record("agenthub.inbox.a", 0, 7, b"k", b"\xff\xff\xff", 1_733_500_000_123, ()))
    assert item.envelope is None and item.error
    assert_same(item)
    assert json.loads(record_json(item))["envelope"] is None


def test_an_envelope_protobuf_cannot_print_is_reported_not_fatal() -> None:
    """An agent's payload may carry a timestamp out of range: the record is shown with the reason."""
    envelope = Envelope(id="e1")
    envelope.created_at.nanos = -1
    item = Scanned(Record("agenthub.replies.x", 0, 1, None, envelope.SerializeToString(), 5, ()))
    assert_same(item)
    line = json.loads(record_json(item))
    assert line["envelope"] is None and line["error"].startswith("envelope not printable as JSON: ")


async def events(*items: op.ReplayEvent) -> AsyncIterator[op.ReplayEvent]:
    for item in items:
        yield item


async def test_the_cli_prints_raw_records_as_lines_and_refuses_a_hub_that_sends_them_rendered(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    records = [
        Record("agenthub.inbox.a", 0, n, b"k", Envelope(id=f"e{n}").SerializeToString(), 5, ())
        for n in range(3)
    ]
    await replaying.print_records(
        events(op.ReplayEvent(raw=raw_records(records)), op.ReplayEvent(progress=op.Progress(done=True)))
    )
    printed = capfdbinary.readouterr().out.splitlines()
    assert printed == [record_json(Scanned(r)) for r in records]
    old_hub = events(op.ReplayEvent(records=op.ReplayedRecords(records=[replayed(Scanned(records[0]))])))
    with pytest.raises(HubUnavailable, match="predates raw replay"):
        await replaying.print_records(old_hub)


async def test_a_scan_decodes_envelopes_only_for_envelope_filters_and_times_every_record(
    tmp_path: Path,
) -> None:
    """Without envelope filters a record that is not an envelope is read back, and nothing is
    decoded; with one it is left out; a time filter applies to every record, envelope or not."""
    async with EmbeddedLog(tmp_path / "log.db") as log:
        await log.ensure_topic("agenthub.inbox.a", 1)
        good = await log.produce("agenthub.inbox.a", Envelope(id="e1", sender="ann").SerializeToString())
        bad = await log.produce("agenthub.inbox.a", b"\xff\xff\xff")
        operator = Operator(
            log, cast(ThreadStore, None), cast(Registry, None), Topics(), "agenthub.replies.x"
        )

        async def scanned(**selection: Any) -> list[Scanned]:
            found: list[Scanned] = []
            async for items in operator.scan(op.Selection(**selection), Counter(0)):
                found += items or []
            return found

        everything = await scanned()
        assert [i.record.offset for i in everything] == [good.offset, bad.offset]
        assert all("_decoded" not in vars(item) for item in everything)  # nothing was decoded
        assert [i.record.offset for i in await scanned(sender="ann")] == [good.offset]
        later = Timestamp()
        later.FromMilliseconds(max(good.timestamp_ms, bad.timestamp_ms) + 1)
        assert await scanned(from_time=later) == []
