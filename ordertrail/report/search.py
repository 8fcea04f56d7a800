"""Finding orders without their id: by attribute, by trace id, by hop and time range."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text

from ordertrail.report.redact import mask
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store


def attr_expr(dialect: str, key: str) -> str:
    """The SQL expression for one attribute; the same text is used by its expression index."""
    if dialect == "postgresql":
        return "(attributes::jsonb ->> '" + key.replace("'", "''") + "')"
    path = '$."' + key.replace('"', '\\"') + '"'
    return "json_extract(attributes, '" + path.replace("'", "''") + "')"


def index_name(key: str) -> str:
    return "ix_attr_" + re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def ensure_attribute_indexes(store: Store, keys: tuple[str, ...] | list[str]) -> None:
    """Expression indexes for the attributes the config marks ``searchable``."""
    if not keys:
        return
    with store.engine.begin() as conn:
        for k in keys:
            conn.execute(
                text(
                    f"CREATE INDEX IF NOT EXISTS {index_name(k)} ON events ({attr_expr(store.dialect, k)})"
                )
            )


def search_orders(
    store: Store,
    config: Config | None,
    *,
    attrs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    trace_id: str | None = None,
    hop: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 50,
    redact: bool = False,
) -> list[dict[str, Any]]:
    """Orders with an event matching every condition, newest first."""
    conds: list[str] = []
    params: dict[str, Any] = {}
    for i, (key, value) in enumerate(attrs):
        expr = attr_expr(store.dialect, key)
        params[f"a{i}"] = value
        alts = [f"{expr} = :a{i}"]
        if store.dialect == "sqlite":
            try:
                num = float(value)
            except ValueError:
                num = None
            if num is not None:
                params[f"n{i}"] = num
                alts.append(f"{expr} = :n{i}")
        conds.append("(" + " OR ".join(alts) + ")")
    if trace_id:
        conds.append("trace_id = :trace")
        params["trace"] = trace_id
    if hop:
        conds.append("hop = :hop")
        params["hop"] = hop
    if since is not None:
        conds.append("occurred_at >= :since")
        params["since"] = since
    if until is not None:
        conds.append("occurred_at <= :until")
        params["until"] = until
    if not conds:
        raise ValueError(
            "give at least one condition: --attr, --trace-id, --hop, --since or --until"
        )
    sql = (
        "SELECT order_id, max(occurred_at) AS last_match, count(*) AS matches FROM events WHERE "
        + " AND ".join(conds)
        + " GROUP BY order_id ORDER BY last_match DESC, order_id LIMIT :limit"
    )
    params["limit"] = limit
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql), params).fetchall()
        out = []
        for r in rows:
            trail = conn.execute(
                text(
                    "SELECT hop, phase, occurred_at, source, source_ref, attributes FROM events "
                    "WHERE order_id = :o ORDER BY occurred_at DESC LIMIT 1"
                ),
                {"o": r.order_id},
            ).first()
            kinds = [
                k[0]
                for k in conn.execute(
                    text(
                        "SELECT DISTINCT kind FROM findings WHERE order_id = :o AND status IN ('new', 'open')"
                    ),
                    {"o": r.order_id},
                )
            ]
            out.append({
                "order_id": r.order_id,
                "matches": int(r.matches),
                "last_match": us_to_iso(int(r.last_match)),
                "last_event": None if trail is None else {
                    "hop": trail.hop, "phase": trail.phase, "time": us_to_iso(int(trail.occurred_at)),
                    "source": trail.source, "source_ref": trail.source_ref,
                },
                "findings": sorted(kinds),
            })  # fmt: skip
    if redact and config:
        for o in out:
            for key, _ in attrs:
                if key in config.pipeline.personal:
                    o["matched"] = {key: mask(dict(attrs)[key])}
    return out
