"""``ordertrail status``: per source events, quarantine, filtered, watermark, checkpoint and lag."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ordertrail.collectors.file import FileSource
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store


@dataclass
class SourceStatus:
    name: str
    kind: str
    events: int = 0
    quarantined: int = 0
    filtered: int = 0  # records the source's ``where`` did not take
    watermark: int | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    lag: int | None = None  # file: bytes not yet read; kafka: messages behind
    lag_unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "events": self.events,
            "quarantined": self.quarantined,
            "filtered": self.filtered,
            "watermark": us_to_iso(self.watermark),
            "checkpoint": self.checkpoint,
            "lag": self.lag,
            "lag_unit": self.lag_unit,
        }


@dataclass
class StoreStatus:
    events: int
    quarantine: int
    orders: int
    sources: list[SourceStatus]
    unlinked: int | None = None  # objects of no order, as the last reconcile run saw them
    unlinked_run: int | None = None

    @property
    def filtered(self) -> int:
        return sum(s.filtered for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "quarantine": self.quarantine,
            "filtered": self.filtered,
            "orders": self.orders,
            "unlinked": self.unlinked,
            "unlinked_run": self.unlinked_run,
            "sources": [s.as_dict() for s in self.sources],
        }


def store_status(store: Store, config: Config | None) -> StoreStatus:
    import orjson

    per_source = store.events_per_source()
    per_q = store.quarantine_per_source()
    cps: dict[str, dict[str, dict[str, Any]]] = {}
    for row in store.all_checkpoints():
        cps.setdefault(row["source"], {})[row["key"]] = row
    names: list[tuple[str, str]] = [(s.name, s.kind) for s in config.sources] if config else []
    known = {n for n, _ in names}
    for extra in sorted(set(per_source) | set(per_q) | set(cps)):
        if extra not in known:
            names.append((extra, "unconfigured"))
    out = []
    for name, kind in names:
        st = SourceStatus(name, kind, per_source.get(name, 0), per_q.get(name, 0))
        src_cps = cps.get(name, {})
        positions = {k: orjson.loads(v["position"]) for k, v in src_cps.items()}
        # each part (file, partition) keeps its own cumulative count, written with its position
        st.filtered = sum(int(p.get("filtered", 0)) for p in positions.values())
        if "" in src_cps:
            st.watermark = src_cps[""]["watermark"]
        if kind == "file" and config:
            st.checkpoint, st.lag = _file_progress(config, name, src_cps)
            st.lag_unit = "bytes"
        elif kind == "kafka":
            parts = {k: p for k, p in positions.items() if k}
            st.checkpoint = {"partitions": len(parts)}
            lag = 0
            for p in parts.values():
                if "end" in p and "offset" in p:
                    lag += max(0, int(p["end"]) - int(p["offset"]))
            st.lag, st.lag_unit = lag, "messages"
        elif kind == "otlp":
            st.checkpoint = {
                "not_order_spans": int(positions.get("", {}).get("not_order_spans", 0))
            }
        out.append(st)
    unlinked, run = store.last_run_unlinked()
    return StoreStatus(
        store.count_events(), store.count_quarantine(), store.count_orders(), out, unlinked, run
    )


def _file_progress(
    config: Config, name: str, cps: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    import orjson

    src = config.source(name)
    fsrc = FileSource(src)
    files = fsrc.paths()
    read = 0
    lag = 0
    for p in files:
        row = cps.get(p)
        pos = orjson.loads(row["position"]) if row else {}
        full = fsrc.full(p)
        size = os.path.getsize(full) if os.path.exists(full) else 0
        if pos.get("done") and (
            p.endswith(".gz") or pos.get("offset", 0) >= size or _as_read(full, pos)
        ):
            read += 1
        elif not p.endswith(".gz"):
            lag += max(0, size - int(pos.get("offset", 0)))
        else:
            lag += size
    return {"files": len(files), "files_read": read}, lag


def _as_read(full: str, pos: dict[str, Any]) -> bool:
    """Whether a file marked done is as it was when it was read to its end. Its offset may stay
    short of its size: a settled, unterminated last line that went to quarantine is left unread
    (completed later, it is read then), but the file counts as read."""
    try:
        st = os.stat(full)
    except OSError:
        return False
    return pos.get("size") == st.st_size and pos.get("mtime") == st.st_mtime_ns // 1000
