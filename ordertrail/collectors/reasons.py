"""Quarantine reasons counted the way ``check``, ``ingest`` and ``collect`` show them.

Records failing the same way count together under a key that keeps the reason's field path but
drops the record's own values ("unparseable timestamp … (field 'at'; tried ISO-8601, epoch)"),
and the first record of each key is kept as an example (where it is, and its full reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TOP_REASONS = 5
EXAMPLE_CHARS = 400
MAX_KEYS = 1000  # distinct reasons remembered; a long-running collector stays bounded


@dataclass(slots=True)
class Example:
    """One record behind a reason: where it is, what it says (raw, cut short; None where the
    output should not carry records), and its full reason."""

    source_ref: str
    raw: str | None
    reason: str

    def as_dict(self) -> dict[str, str]:
        if self.raw is None:
            return {"source_ref": self.source_ref, "reason": self.reason}
        return {"source_ref": self.source_ref, "raw": self.raw, "reason": self.reason}


@dataclass(slots=True)
class ReasonCount:
    """Records sharing one reason (the record's own values left out, the field path kept)."""

    reason: str
    count: int
    field: str | None
    example: Example

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "field": self.field,
            "example": self.example.as_dict(),
        }


_VALUE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\{.*\}|\[.*\]""")
_FIELD = re.compile(r"""(?:field|path|objects field '[^']*' =) '([^']+)'""")


def reason_key(reason: str) -> str:
    """A quarantine reason without the record's own values but with its field path, so records
    failing the same way count together: "unparseable timestamp … (field 'at'; tried …)"."""
    head, sep, tail = reason.partition(" (")
    head = _VALUE.sub("…", head)
    before, colon, _ = head.partition(": ")
    if colon and "…" not in before:  # "malformed JSON: unexpected character: … (char 9)"
        head = before
        if not _FIELD.search(tail):
            sep = tail = ""
    return head + sep + tail


def reason_field(reason: str) -> str | None:
    """The field path a reason names ("missing order id (field 'order.id')" -> "order.id")."""
    m = _FIELD.search(reason)
    return m.group(1) if m else None


def cut(raw: bytes | str) -> str:
    """A raw record as example text, cut to :data:`EXAMPLE_CHARS`."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


class ReasonTally:
    """Counts records by reason key, keeping the first record of each key as the example.

    At most :data:`MAX_KEYS` distinct keys are kept; records under further keys are counted in
    :attr:`other` (they still count in :attr:`total`).
    """

    def __init__(self, *, keep_raw: bool = True) -> None:
        self.keep_raw = keep_raw
        self._groups: dict[str, list[Any]] = {}  # key -> [count, Example]
        self.total = 0
        self.other = 0

    def add(
        self, reason: str, source_ref: str, raw: bytes | str = b"", key: str | None = None
    ) -> None:
        """Count one record; ``key`` defaults to :func:`reason_key` of the reason."""
        self.total += 1
        k = reason_key(reason) if key is None else key
        cur = self._groups.get(k)
        if cur is not None:
            cur[0] += 1
        elif len(self._groups) >= MAX_KEYS:
            self.other += 1
        else:
            ex = Example(source_ref, cut(raw) if self.keep_raw else None, reason)
            self._groups[k] = [1, ex]

    def counts(self) -> dict[str, int]:
        """Reason key -> records, most frequent first."""
        return {r.reason: r.count for r in self.top(None)}

    def top(self, n: int | None = TOP_REASONS) -> list[ReasonCount]:
        """The ``n`` most frequent reasons (all when None), ties by reason."""
        ordered = sorted(self._groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
        if n is not None:
            ordered = ordered[:n]
        return [ReasonCount(k, v[0], reason_field(k), v[1]) for k, v in ordered]

    def __bool__(self) -> bool:
        return self.total > 0
