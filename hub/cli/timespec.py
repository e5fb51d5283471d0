"""Times as operators type them: `--since 2h`, `--from 2026-11-26T10:00Z`, `--to "2026-11-26 12:00"`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from agenthub.sdk.errors import InvalidRequest

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def ago(text: str, *, now: datetime | None = None) -> Timestamp:
    """The moment `text` (a duration like 90s, 15m, 2h, 1d, 1w) before now."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidRequest(f"invalid duration {text!r}: use a number and s, m, h, d or w (e.g. 2h)")
    amount, unit = float(match.group(1)), match.group(2)
    return _stamp((now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount}))


def moment(text: str) -> Timestamp:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-26T10:00:00Z") from None
    return _stamp(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp
