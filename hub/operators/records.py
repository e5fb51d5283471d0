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
    """A scanned record as one line of the replay JSONL schema (compact JSON, UTF-8): what a raw
    thread export holds; `replayed()` in one JSON object."""
    r = item.record
    headers = {k: v.decode(errors="replace") for k, v in r.headers}
    return _line(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, headers, *_shown(item))


def raw_json(raw: op.RawRecord) -> bytes:
    """`record_json` of the record a raw record carries, read from the message itself: how
    `agenthub replay` prints every record."""
    envelope = Envelope()
    try:
        envelope.ParseFromString(raw.value)
    except DecodeError as exc:
        shown: tuple[Any, str] = (None, f"not an envelope: {exc}")
    else:
        shown = _printed(envelope)
    headers = dict(zip(raw.header_keys, [v.decode(errors="replace") for v in raw.header_values], strict=True))
    return _line(raw.topic, raw.partition, raw.offset, raw.timestamp_ms, raw.key, headers, *shown)


def _line(
    topic: str, partition: int, offset: int, ms: int, key: bytes | None, headers: dict[str, str],
    envelope: Any, error: str,
) -> bytes:  # fmt: skip
    line = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp_json(ms // 1000, ms % 1000 * 1_000_000),
        "key": (key or b"").decode(errors="replace"),
        "headers": headers,
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
    envelope, out.error = _shown(item)
    if envelope is not None:
        out.envelope_json = json.dumps(envelope)
    return out


def _shown(item: Scanned) -> tuple[Any, str]:
    """A scanned record's envelope as a JSON value, or None and why."""
    return (None, item.error) if item.envelope is None else _printed(item.envelope)


def _printed(envelope: Envelope) -> tuple[Any, str]:
    """An envelope as a JSON value, or None and why: one that protobuf cannot print as JSON (a
    timestamp out of range in an agent's payload) is reported like a record that is not an
    envelope, rather than ending the replay."""
    try:
        return to_object(envelope, proto_names=True), ""
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
