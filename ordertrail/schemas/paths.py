"""Field paths into records: dotted keys, list indexes and ``[*]`` (``line_items[*].id``).

The path syntax is part of the config (checked when it loads); the accessors read records fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MISSING: Any = object()  # what an accessor returns for a path the record does not have
_MISSING = MISSING

Getter = Callable[[Any], Any]
# one dotted part of a path: its key, the list index it also is (a number), then its brackets
# (an index, or None for [*])
Segment = tuple[str, int | None, tuple[int | None, ...]]

_PART = re.compile(r"([^\[\]]+)((?:\[(?:\*|\d+)\])*)")
_BRACKET = re.compile(r"\[(\*|\d+)\]")


class PathError(ValueError):
    """A path that cannot be read: ``a..b``, ``items[x]``."""


def parse_path(path: str) -> tuple[Segment, ...]:
    """``line_items[*].id`` -> (("line_items", None, (None,)), ("id", None, ()))."""
    segs: list[Segment] = []
    for part in path.split("."):
        m = _PART.fullmatch(part)
        if m is None:
            raise PathError(
                f"bad path {path!r}: parts are keys or list indexes joined by dots, "
                "optionally followed by [N] or [*] (line_items[*].id)"
            )
        key = m.group(1)
        idx = int(key) if key.isascii() and key.isdigit() else None
        brackets = tuple(None if b == "*" else int(b) for b in _BRACKET.findall(m.group(2)))
        segs.append((key, idx, brackets))
    return tuple(segs)


def _index(v: Any, i: int) -> Any:
    return v[i] if type(v) is list and i < len(v) else _MISSING


def _one(cur: Any, segs: tuple[Segment, ...], i: int) -> Any:
    """The value at ``segs[i:]`` below ``cur`` (no ``[*]`` in the path), or _MISSING."""
    if i == len(segs):
        return cur
    if isinstance(cur, dict):
        key = ""
        for j in range(i, len(segs)):
            name, _, brackets = segs[j]
            key = name if j == i else f"{key}.{name}"
            v = cur.get(key, _MISSING)
            for b in brackets:
                v = _index(v, b)  # type: ignore[arg-type]
            if v is not _MISSING:
                found = _one(v, segs, j + 1)
                if found is not _MISSING:
                    return found
            if brackets:  # a key spelled with dots cannot run past brackets
                break
        return _MISSING
    if isinstance(cur, list):
        _, idx, brackets = segs[i]
        if idx is None:
            return _MISSING
        v = _index(cur, idx)
        for b in brackets:
            v = _index(v, b)  # type: ignore[arg-type]
        return _MISSING if v is _MISSING else _one(v, segs, i + 1)
    return _MISSING


def _many(cur: Any, segs: tuple[Segment, ...], i: int, out: list[Any]) -> bool:
    """Append every value at ``segs[i:]`` below ``cur`` to ``out``; True when there was one."""
    if i == len(segs):
        out.append(cur)
        return True
    if isinstance(cur, dict):
        key = ""
        for j in range(i, len(segs)):
            name, _, brackets = segs[j]
            key = name if j == i else f"{key}.{name}"
            v = cur.get(key, _MISSING)
            if v is not _MISSING and _expand(v, brackets, segs, j + 1, out):
                return True
            if brackets:
                break
        return False
    if isinstance(cur, list):
        _, idx, brackets = segs[i]
        return idx is not None and idx < len(cur) and _expand(cur[idx], brackets, segs, i + 1, out)
    return False


def _expand(
    v: Any, brackets: tuple[int | None, ...], segs: tuple[Segment, ...], nxt: int, out: list[Any]
) -> bool:
    vals = [v]
    for b in brackets:
        step: list[Any] = []
        for x in vals:
            if type(x) is list:
                if b is None:
                    step.extend(x)
                elif b < len(x):
                    step.append(x[b])
        vals = step
    found = False
    for x in vals:
        found = _many(x, segs, nxt, out) or found
    return found


def compile_path(path: str) -> tuple[Getter, bool]:
    """A fast accessor for one path, and whether it selects many values (has ``[*]``).

    A single-valued accessor returns the value or _MISSING; a many-valued one a list (maybe empty).
    """
    segs = parse_path(path)
    if any(None in br for _, _, br in segs):

        def many(d: Any) -> list[Any]:
            out: list[Any] = []
            _many(d, segs, 0, out)
            return out

        return many, True
    plain = not any(br for _, _, br in segs)
    if plain and len(segs) == 1:
        return (lambda d: d.get(path, _MISSING)), False
    if plain and len(segs) == 2:
        a, b = segs[0][0], segs[1][0]

        def two(d: Any) -> Any:
            v = d.get(path, _MISSING)
            if v is not _MISSING:
                return v
            inner = d.get(a, _MISSING)
            if type(inner) is dict:
                return inner.get(b, _MISSING)
            if inner is _MISSING:
                return _MISSING
            return _one(d, segs, 0)  # a list indexed by a number

        return two, False

    def general(d: Any) -> Any:
        v = d.get(path, _MISSING)
        return v if v is not _MISSING else _one(d, segs, 0)

    return general, False
