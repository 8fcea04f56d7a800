"""Timestamps from records: a source's strptime format, ISO-8601 with any offset, or epoch
seconds / ms / µs / ns.

Everything becomes microseconds since the epoch, UTC. Naive times take the source's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from math import isfinite
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
    # int(x + 0.5) rounds like round() for our magnitudes and is several times faster
    if a >= _MS:
        return int(v * 1000 + (0.5 if v >= 0 else -0.5))
    return int(v * 1_000_000 + (0.5 if v >= 0 else -0.5))


def parse_timestamp(value: object, tz: tzinfo = UTC) -> int:
    """Parse one record's time; raise TimestampError saying why it is not a time."""
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        if not isfinite(value):
            raise TimestampError(f"not a timestamp: {value!r}")
        us = epoch_to_us(value)
    elif not isinstance(value, str):
        raise TimestampError(f"not a timestamp: {value!r}")
    else:
        s = value if len(value) > 10 and value[4] == "-" else value.strip()  # ISO: the common case
        if not s:
            raise TimestampError("empty timestamp")
        if s[0].isdigit() and "-" not in s and ":" not in s:
            us = _epoch_text(s, value)
        else:
            us = _iso_to_us(s, value, tz)
    if not _MIN_US <= us <= _MAX_US:
        raise TimestampError(f"timestamp out of range: {value!r}")
    return us


def _epoch_text(s: str, value: str) -> int:
    """Epoch seconds / ms / µs written as text."""
    if s.isdigit():
        return epoch_to_us(int(s))
    try:
        f = float(s)
    except ValueError:
        raise TimestampError(f"unparseable timestamp {value!r}") from None
    if not isfinite(f):
        raise TimestampError(f"not a timestamp: {value!r}")
    return epoch_to_us(f)


def _iso_to_us(s: str, value: str, tz: tzinfo) -> int:
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise TimestampError(f"unparseable timestamp {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def parse_with_format(value: object, fmt: str | None, tz: tzinfo = UTC) -> int:
    """A source's ``timestamp_format`` (strptime) first, then ISO-8601 and epoch.

    The format is tried on text and on integers (``20260301`` with ``%Y%m%d`` is a date, not an
    epoch second); a naive result takes ``tz``.
    """
    if fmt is not None and (type(value) is str or type(value) is int):
        try:
            dt = datetime.strptime(str(value).strip(), fmt)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
            d = dt - _EPOCH
            us = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
            if not _MIN_US <= us <= _MAX_US:
                raise TimestampError(f"timestamp out of range: {value!r}")
            return us
    return parse_timestamp(value, tz)


def formats_tried(fmt: str | None) -> str:
    """What a source tries on its times, for quarantine reasons: "'%d.%m.%Y', ISO-8601, epoch"."""
    return f"{fmt!r}, ISO-8601, epoch" if fmt else "ISO-8601, epoch"


def zone(name: str | None) -> tzinfo:
    return UTC if not name or name == "UTC" else ZoneInfo(name)
