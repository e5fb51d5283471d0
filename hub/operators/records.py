"""How a record read back from the log is shown: as a `ReplayedRecord` message, as a line of the
replay JSONL schema, or as it is in the log (`RawRecord`, for a client that renders it itself).

`agenthub replay` asks for raw records and prints their lines itself: rendering is most of a
replayed record's cost, and done in the CLI it runs on the CLI's core, beside the hub reading the
next records, instead of taking hub CPU from the traffic it routes. A thread export renders on the
hub. Both print with `record_json`, so a line is the same wherever it was made.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import orjson
from a2a.types import a2a_pb2  # noqa: F401 - registers the A2A payload types an envelope's Any holds
from google.protobuf.json_format import SerializeToJsonError
from google.protobuf.message import DecodeError

from agenthub.hub import envelopes
from agenthub.hub.log._base import Record
from agenthub.hub.recording.protojson import timestamp_json, to_object
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb.envelope_pb2 import Envelope


class Scanned:
    """One record read back; its envelope is decoded when first asked for (a raw replay without
    filters never asks): None, with the reason in `error`, when the record is not an envelope."""

    def __init__(self, record: Record) -> None:
        self.record = record

    @cached_property
    def _decoded(self) -> tuple[Envelope | None, str]:
        try:
            return envelopes.decode(self.record), ""
        except DecodeError as exc:
            return None, f"not an envelope: {exc}"

    @property
    def envelope(self) -> Envelope | None:
        return self._decoded[0]

    @property
    def error(self) -> str:
        return self._decoded[1]


def record_json(item: Scanned) -> bytes:
    """A scanned record as one line of the replay JSONL schema (compact JSON, UTF-8): what `agenthub
    replay` prints and a raw thread export holds; `replayed()` in one JSON object."""
    record, ms = item.record, item.record.timestamp_ms
    envelope, error = _printed(item)
    line = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": timestamp_json(ms // 1000, ms % 1000 * 1_000_000),
        "key": (record.key or b"").decode(errors="replace"),
        "headers": {k: v.decode(errors="replace") for k, v in record.headers},
        "envelope": envelope,
    }
    if error:
        line["error"] = error
    return orjson.dumps(line)


def replayed(item: Scanned) -> op.ReplayedRecord:
    """A scanned record as the operator service shows it to clients that do not render it."""
    record = item.record
    out = op.ReplayedRecord(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=(record.key or b"").decode(errors="replace"),
        headers={k: v.decode(errors="replace") for k, v in record.headers},
    )  # fmt: skip
    out.timestamp.FromMilliseconds(record.timestamp_ms)
    envelope, out.error = _printed(item)
    if envelope is not None:
        out.envelope_json = json.dumps(envelope)
    return out


def _printed(item: Scanned) -> tuple[Any, str]:
    """A scanned record's envelope as a JSON value, and why there is none: an envelope that
    protobuf cannot print as JSON (a timestamp out of range in an agent's payload) is reported
    like a record that is not an envelope, rather than ending the replay."""
    if item.envelope is None:
        return None, item.error
    try:
        return to_object(item.envelope, proto_names=True), ""
    except (SerializeToJsonError, ValueError) as exc:
        return None, f"envelope not printable as JSON: {exc}"


def raw_records(records: list[Record]) -> op.RawRecords:
    """Records as they are in the log, built in place (a message built apart is copied in)."""
    out = op.RawRecords()
    add = out.records.add
    for r in records:
        add(
            topic=r.topic, partition=r.partition, offset=r.offset, timestamp_ms=r.timestamp_ms,
            key=r.key, value=r.value, header_keys=[k for k, _ in r.headers],
            header_values=[v for _, v in r.headers],
        )  # fmt: skip
    return out


def from_raw(raw: op.RawRecord) -> Record:
    """The record a `RawRecord` carries."""
    headers = tuple(zip(raw.header_keys, raw.header_values, strict=True))
    key = raw.key if raw.HasField("key") else None
    return Record(raw.topic, raw.partition, raw.offset, key, raw.value, raw.timestamp_ms, headers)
