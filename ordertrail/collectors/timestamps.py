"""Timestamps from records: ISO-8601 with any offset, or epoch seconds / ms / µs / ns.

Everything becomes microseconds since the epoch, UTC. Naive times take the source's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# magnitudes past which an epoch number is taken as ms, µs, ns (year ~5138 in seconds)
_MS, _US, _NS = 1e11, 1e14, 1e17
_MIN_US = -62_135_596_800_000_000  # year 1
_MAX_US = 253_402_300_799_000_000  # year 9999


class TimestampError(ValueError):
    pass


def epoch_to_us(v: float) -> int:
    """Epoch number in s, ms, µs or ns (by magnitude) -> µs."""
    a = abs(v)
    if a >= _NS:
        return int(v // 1000)
    if a >= _US:
        return int(v)
    if a >= _MS:
        return round(v * 1000)
    return round(v * 1_000_000)


def parse_timestamp(value: object, tz: tzinfo = UTC) -> int:
    """Parse one record's time; raise TimestampError saying why it is not a time."""
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError(f"not a timestamp: {value!r}")
        us = epoch_to_us(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            raise TimestampError("empty timestamp")
        c = s[0]
        if c.isdigit() and (s.isdigit() or _is_number(s)) and ("-" not in s and ":" not in s):
            us = epoch_to_us(float(s) if "." in s or "e" in s.lower() else int(s))
        else:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                raise TimestampError(f"unparseable timestamp {value!r}") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
            d = dt - _EPOCH
            us = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    else:
        raise TimestampError(f"not a timestamp: {value!r}")
    if not _MIN_US <= us <= _MAX_US:
        raise TimestampError(f"timestamp out of range: {value!r}")
    return us


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def zone(name: str | None) -> tzinfo:
    return UTC if not name or name == "UTC" else ZoneInfo(name)
