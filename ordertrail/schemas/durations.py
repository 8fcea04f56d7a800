"""Durations such as ``90s``, ``15m``, ``24h``, ``2d`` or ``1h30m``, held as whole microseconds."""

from __future__ import annotations

import re

US = 1_000_000
_UNITS = {"ms": 1_000, "s": US, "m": 60 * US, "h": 3600 * US, "d": 86400 * US, "w": 7 * 86400 * US}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
MAX_US = 100 * 366 * 86400 * US  # a century: longer is a typo, and would overflow 64-bit times


def parse_duration(text: str | int | float) -> int:
    """Return the duration in microseconds; a bare number means seconds.

    Raises ValueError with the offending text when it is not a duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text != text or text in (float("inf"), float("-inf")):
            raise ValueError(f"not a duration: {text!r}")
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return _bounded(text * US, text)
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r}")
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0
    for m in _PART.finditer(s):
        if s[pos : m.start()].strip():
            break
        if len(m.group(1)) > 20:
            raise ValueError(f"duration too long: {text!r} (at most 100 years)")
        total += _bounded(float(m.group(1)) * _UNITS[m.group(2)], text)
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 2d)")
    return _bounded(total, text)


def _bounded(us: float, text: object) -> int:
    if not us <= MAX_US:  # also NaN
        raise ValueError(f"duration too long: {text!r} (at most 100 years)")
    return int(us)


def format_duration(us: int | float) -> str:
    """Render microseconds compactly for people: ``3d 4h``, ``15m``, ``42s``."""
    neg = us < 0
    secs = int(abs(us) // US)
    d, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        out = f"{d}d {h}h" if h else f"{d}d"
    elif h:
        out = f"{h}h {m}m" if m else f"{h}h"
    elif m:
        out = f"{m}m {s}s" if s else f"{m}m"
    else:
        out = f"{s}s"
    return f"-{out}" if neg else out
