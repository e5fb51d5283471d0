"""Checks of what clients send, at the edges, before it reaches a store or the log.

Every mistake becomes an `InvalidRequest` whose message names the field and says what is
accepted, so no bad value can surface later as a database error (an integer SQLite cannot hold,
a NUL byte PostgreSQL refuses, a LIKE pattern too complex to run) or as an internal error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.sdk.errors import InvalidRequest

PAGE_TOKEN = re.compile(r"^[0-9]{1,15}$")  # the hub hands out offsets as decimal strings
MAX_SEARCH_CHARS = 500
MAX_FILTER_CHARS = 1000
MAX_PAGE_SIZE = 500
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_OFFSET = 2**62


def page_offset(token: str, field: str = "page_token") -> int:
    """The offset a page token stands for ("" is the first page)."""
    if not token:
        return 0
    if not PAGE_TOKEN.match(token):
        raise InvalidRequest(
            f"invalid {field} {token[:40]!r}: pass the next_page_token of a previous page, or nothing"
        )
    return int(token)


def page_size(size: int, default: int, field: str = "page_size", maximum: int = MAX_PAGE_SIZE) -> int:
    """A page size: 0 (unset) is `default`; otherwise 1..maximum."""
    if size == 0:
        return default
    if not 1 <= size <= maximum:
        raise InvalidRequest(f"{field} must be between 1 and {maximum} (or unset), not {size}")
    return size


def text(value: str, field: str, max_chars: int = MAX_FILTER_CHARS) -> str:
    """A free-text argument: bounded, and without NUL characters (no database stores them)."""
    if len(value) > max_chars:
        raise InvalidRequest(f"{field} is {len(value)} characters long; at most {max_chars} are accepted")
    if "\x00" in value:
        raise InvalidRequest(f"{field} contains a NUL character")
    return value


def timestamp(value: Timestamp, field: str) -> float:
    """A timestamp in seconds, if it lies within google.protobuf.Timestamp's valid range."""
    if not (MIN_SECONDS <= value.seconds <= MAX_SECONDS and 0 <= value.nanos < 1_000_000_000):
        raise InvalidRequest(f"{field} is out of range: use a time between years 1 and 9999")
    return float(value.ToNanoseconds() / 1e9)


def offset(value: int, field: str) -> int:
    """A log offset a client names: 0 or more, and one a log can hold."""
    if not 0 <= value <= MAX_OFFSET:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_OFFSET}, not {value}")
    return value


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object `text` holds; InvalidRequest when it is not JSON, or JSON but not an object
    (protobuf's own parser would name a Python exception for that)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object, not {json_kind(value)}")
    return value


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
