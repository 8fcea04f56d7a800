"""Human details, rendered from a finding's structured evidence (never parsed back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertrail.schemas.durations import format_duration

OBJECT_LIST_LIMIT = 10


def when(iso: str | None) -> str:
    """ISO-8601 UTC -> '2026-03-01 14:05 UTC' (None -> '?')."""
    if not iso:
        return "?"
    if len(iso) >= 17 and iso[10] == "T" and iso.endswith("Z"):  # as us_to_iso writes it
        return f"{iso[:10]} {iso[11:16]} UTC"
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def dur_s(seconds: float | int | None) -> str:
    if seconds is None:
        return "?"
    return format_duration(int(abs(seconds)) * 1_000_000) if seconds else "0s"


def plural(kind: str, n: int) -> str:
    if n == 1:
        return kind
    if kind.endswith(("s", "x", "sh", "ch")):
        return kind + "es"
    if kind.endswith("y") and kind[-2:-1] not in "aeiou":
        return kind[:-1] + "ies"
    return kind + "s"


def objects_phrase(objects: list[str], totals: dict[str, int]) -> str:
    """'2 of 5 items: SKU-1, SKU-4' — per object kind, ids unbroken and never truncated in text
    (long lists end with '… and N more')."""
    by_kind: dict[str, list[str]] = {}
    for o in objects:
        k, _, i = o.partition(":")
        by_kind.setdefault(k, []).append(i)
    parts = []
    for k, ids in by_kind.items():
        total = totals.get(k)
        shown = ", ".join(ids[:OBJECT_LIST_LIMIT])
        more = f" … and {len(ids) - OBJECT_LIST_LIMIT} more" if len(ids) > OBJECT_LIST_LIMIT else ""
        if total and total >= len(ids):
            parts.append(f"{len(ids)} of {total} {plural(k, total)}: {shown}{more}")
        else:
            parts.append(f"{plural(k, len(ids))} {shown}{more}")
    return "; ".join(parts)


def render_detail(
    kind: str, hop: str, from_hop: str | None, fld: str | None, objects: list[str],
    evidence: dict[str, Any],
) -> str:  # fmt: skip
    """The detail line of a finding, from its evidence."""
    e = evidence
    totals = e.get("objects_total", {})
    head = objects_phrase(objects, totals) + ": " if objects else ""
    if kind in ("vanished", "stalled"):
        text = (
            f"{from_hop} at {when(e.get('from_at'))}; {hop} was due by {when(e.get('deadline'))}, "
            f"{dur_s(e.get('overdue_s'))} overdue; "
        )
        if kind == "vanished":
            n = int(e.get("later_orders", 0))
            noun = plural("order", n)
            if objects:  # the edge's units: objects, and orders that have none of them
                noun = f"{plural(objects[0].partition(':')[0], n)}/orders"
            reached = " or ".join(e.get("later_reached") or [hop])
            text += f"{n:,} later {noun} reached {reached} since: lost between {from_hop} and {hop}"
        else:
            last = e.get("last_hop_event")
            seen = f"last {hop} event {when(last)}" if last else f"no {hop} event at all"
            text += f"{hop} has passed no later order since ({seen})"
    elif kind == "confirmed_unfulfilled":
        text = (
            f"{from_hop} at {when(e.get('promised_at'))} told the customer; {hop} was due by "
            f"{when(e.get('deadline'))} and is {dur_s(e.get('overdue_s'))} overdue"
        )
    elif kind == "late":
        if e.get("promise"):
            text = (
                f"{hop} kept {from_hop}'s promise at {when(e.get('kept_at'))}, "
                f"{dur_s(e.get('late_s'))} after its deadline {when(e.get('deadline'))}"
            )
        else:
            text = (
                f"{hop} reached {when(e.get('reached_at'))}, {dur_s(e.get('late_s'))} after its "
                f"deadline {when(e.get('deadline'))} ({from_hop} at {when(e.get('from_at'))})"
            )
    elif kind == "out_of_order":
        text = (
            f"{hop} at {when(e.get('reached_at'))} is before {from_hop} at "
            f"{when(e.get('from_at'))} (clock skew allowed: {dur_s(e.get('skew_s'))})"
        )
    elif kind == "duplicate":
        by = e.get("by")
        what = f"distinct {by} values" if by else "distinct completed events"
        text = (
            f"{e.get('count')} {what} at {hop} (first {when(e.get('first_at'))}, second "
            f"{when(e.get('second_at'))})"
        )
    elif kind == "skipped":
        text = f"{e.get('later_hop')} reached at {when(e.get('later_at'))} without {hop}"
    elif kind == "failed":
        text = (
            f"{hop} failed at {when(e.get('failed_at'))}; no later success and no closing hop "
            f"within {dur_s(e.get('window_s'))}"
        )
    elif kind == "mismatch":
        text = (
            f"{fld} {e.get('base_value')!s} at {e.get('base_hop')}, {e.get('value')!s} at {hop} "
            f"(tolerance {e.get('tolerance', 0):g})"
        )
    elif kind == "orphan":
        if objects and not e.get("entry_hops"):
            text = (
                f"first seen at {e.get('first_hop')} {when(e.get('first_at'))}; linked to no "
                "order (no event names it together with an order id)"
            )
        else:
            ent = " or ".join(e.get("entry_hops", [hop]))
            text = (
                f"first seen at {e.get('first_hop')} {when(e.get('first_at'))}; no {ent} event "
                "within the lookback"
            )
    else:
        text = kind
    if e.get("missing_attributes"):
        text += f" (expected because the order has no {', '.join(e['missing_attributes'])})"
    last = e.get("last_event")
    if isinstance(last, dict):
        text += (
            f"; last event: {last.get('hop')} {last.get('phase')} {when(last.get('at'))} "
            f"({last.get('source')} {last.get('source_ref')})"
        )
    return head + text
