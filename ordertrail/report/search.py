"""Finding orders without their id: by attribute, by trace id, by hop and time range."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text

from ordertrail.report.redact import is_personal, mask
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store


class _Match(NamedTuple):
    order_id: str
    matches: int
    last_match: int


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
    objects: list[tuple[str, str]] = (),  # type: ignore[assignment]
    trace_id: str | None = None,
    hop: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 50,
    redact: bool = False,
) -> list[dict[str, Any]]:
    """Orders with an event matching every condition, newest first. ``objects`` (kind, id) limit
    the result to the orders those objects belong to; an event that names no order counts for
    the orders of the objects it names."""
    from ordertrail.store import window as w

    via = {o.name: o.via for o in config.objects} if config else {}
    chosen: set[str] | None = None
    if objects:
        now = 2**62
        with store.engine.connect() as conn:
            for kind, oid in objects:
                found = set(w.orders_of_object(conn, kind, oid, via | {kind: via.get(kind)}, now))
                chosen = found if chosen is None else chosen & found
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
    if not conds and chosen is None:
        raise ValueError(
            "give at least one condition: --attr, --object, --trace-id, --hop, --since or --until"
        )
    with store.engine.connect() as conn:
        matches: dict[str, list[int]] = {}  # order -> [count, last match]
        if conds:
            where = " AND ".join(conds)
            for oid, last, n in conn.execute(
                text(
                    f"SELECT order_id, max(occurred_at), count(*) FROM events WHERE {where} "
                    "AND order_id <> '' GROUP BY order_id"
                ),
                params,
            ):
                matches[oid] = [int(n), int(last)]
            # events that name no order count for the orders of their objects
            for t_, objs in conn.execute(
                text(f"SELECT occurred_at, objects FROM events WHERE {where} AND order_id = ''"),
                params,
            ):
                for kind, ids in (orjson.loads(objs) if objs else {}).items():
                    for i in ids:
                        for o in w.orders_of_object(conn, kind, i, via, 2**62):
                            m = matches.setdefault(o, [0, int(t_)])
                            m[0] += 1
                            m[1] = max(m[1], int(t_))
            if chosen is not None:
                matches = {o: m for o, m in matches.items() if o in chosen}
        else:
            for o in sorted(chosen or ()):
                last = w.first_event_time(conn, o, 2**62)
                matches[o] = [1, last or 0]
        ranked = sorted(matches.items(), key=lambda x: (-x[1][1], x[0]))[:limit]
        out = []
        for order_id, (n_match, last_match) in ranked:
            r = _Match(order_id, n_match, last_match)
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
        for row in out:
            for key, _ in attrs:
                if is_personal(key, config.pipeline.personal):
                    row["matched"] = {key: mask(dict(attrs)[key])}
    return out
