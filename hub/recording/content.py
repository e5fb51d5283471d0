"""What a thread keeps of A2A parts: readable text for every part, and JSON without big binaries.

A thread row carries a message's or an artifact's text (what people read, search and export) and
its JSON (what tools read). Every part shows up in the text: text as is, data as compact JSON,
files as a bracketed marker with name, type and size. Binary (`raw`) parts larger than
`INLINE_RAW_BYTES` are left out of the row's JSON and replaced by a marker in the part's metadata
saying how big they were, their SHA-256, and where the bytes are (the task snapshot GetTask
returns, and the log): never dropped without a trace. The task snapshot itself is never trimmed.
"""

from __future__ import annotations

import hashlib
import json

from a2a.types import Artifact, Message, Part
from google.protobuf.json_format import MessageToDict

from agenthub.hub.recording.protojson import to_json

INLINE_RAW_BYTES = 16 * 1024
OMITTED = "agenthub_omitted"  # metadata key of the marker that replaces a big binary part's bytes


def describe(part: Part) -> str:
    """One part as text: its text, its data as JSON, or a marker naming a file."""
    return _describe(part, part.WhichOneof("content"))


def _describe(part: Part, kind: str | None) -> str:
    if kind == "text":
        return part.text
    if kind == "data":
        return json.dumps(MessageToDict(part.data), separators=(",", ":"), sort_keys=True)
    if kind in ("raw", "url"):
        about = ", ".join(x for x in (part.filename, part.media_type) if x)
        where = f"{len(part.raw)} bytes" if kind == "raw" else part.url
        return f"[file {about}: {where}]" if about else f"[file: {where}]"
    return ""


def message_text(message: Message) -> str:
    """A message as text: its text parts (one a line), each file part's marker, and its data parts
    when it has no text (a tool call's status text already says what its data part holds)."""
    parts = [(p, p.WhichOneof("content")) for p in message.parts]  # each part's kind asked once
    if len(parts) == 1 and parts[0][1] == "text":  # most messages: one text part
        return parts[0][0].text
    has_text = any(kind == "text" for _, kind in parts)
    return "\n".join(_describe(p, kind) for p, kind in parts if kind != "data" or not has_text)


def artifact_text(artifact: Artifact) -> str:
    """An artifact as text. Consecutive text parts are concatenated with nothing between them: a
    streamed artifact arrives as chunks whose parts are appended, and the chunks of a sentence
    must read as the sentence; other parts go on lines of their own."""
    out: list[str] = []
    previous = ""
    for part in artifact.parts:
        kind = part.WhichOneof("content")
        if kind == "text" and previous == "text":
            out[-1] += part.text
        else:
            out.append(_describe(part, kind))
        previous = kind or ""
    return "\n".join(out)


def kept_json(item: Message | Artifact) -> str:
    """The message or artifact as JSON, with binary parts over `INLINE_RAW_BYTES` replaced by a marker."""
    if not any(len(p.raw) > INLINE_RAW_BYTES for p in item.parts):
        return to_json(item)
    copy = type(item)()
    copy.CopyFrom(item)
    for part in copy.parts:
        if len(part.raw) > INLINE_RAW_BYTES:
            part.metadata[OMITTED] = {
                "bytes": len(part.raw),
                "sha256": hashlib.sha256(part.raw).hexdigest(),
                "reason": f"binary parts over {INLINE_RAW_BYTES} bytes are not kept in thread rows",
                "where": "the task's snapshot (GetTask) and the log (agenthub replay)",
            }
            part.ClearField("raw")
    return to_json(copy)
