"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that
opens offline in any browser."""

from __future__ import annotations

from html import escape
from typing import Any

from ordertrail.report.summary import Report
from ordertrail.schemas.durations import format_duration

PALETTE = [
    "#2b6cb0",
    "#c53030",
    "#2f855a",
    "#b7791f",
    "#6b46c1",
    "#2c7a7b",
    "#9c4221",
    "#4a5568",
    "#d53f8c",
    "#718096",
]
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1a202c}
h1{font-size:22px;margin-bottom:0}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #e2e8f0}
.muted{color:#718096}table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #edf2f7;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}svg text{font:12px system-ui,sans-serif;fill:#2d3748}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
"""


def _fmt_s(sec: float | None) -> str:
    return "-" if sec is None else format_duration(int(sec * 1e6)) if sec >= 1 else f"{sec:.2f}s"


def funnel_svg(rep: Report) -> str:
    rows = rep.funnel
    width, bar_h, left = 900, 26, 140
    top = max([r["orders"] for r in rows] or [1]) or 1
    h = len(rows) * (bar_h + 8) + 10
    parts = [
        f'<svg class="chart" data-chart="funnel" role="img" aria-label="orders per hop" width="{width}" height="{h}" viewBox="0 0 {width} {h}">'
    ]
    for i, r in enumerate(rows):
        y = 5 + i * (bar_h + 8)
        w = (width - left - 150) * r["orders"] / top
        share = f" ({r['share'] * 100:.1f}%)" if r["share"] is not None else ""
        parts.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(r["hop"])}</text>'
        )
        parts.append(
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}" rx="3"/>'
        )
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 17}">{r["orders"]:,}{share}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(rep: Report) -> str:
    edges = rep.edges
    width, group_h, left = 900, 54, 210
    h = len(edges) * group_h + 30
    parts = [
        f'<svg class="chart" data-chart="latency" role="img" aria-label="latency per edge" width="{width}" height="{h}" viewBox="0 0 {width} {h}">'
    ]
    for i, e in enumerate(edges):
        # each edge on its own scale, up to its time limit or its p99: minutes and days side by side
        scale = (width - left - 130) / max(
            e["within_seconds"], e["latency_seconds"]["p99"] or 0, 1e-9
        )
        y = 5 + i * group_h
        parts.append(
            f'<text x="{left - 8}" y="{y + 26}" text-anchor="end">{escape(e["from"])} → {escape(e["to"])}</text>'
        )
        for j, p in enumerate(("p50", "p95", "p99")):
            v = e["latency_seconds"][p]
            w = (v or 0) * scale
            yy = y + j * 15
            parts.append(
                f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="12" fill="{PALETTE[j]}" rx="2"/>'
            )
            parts.append(f'<text x="{left + w + 6:.1f}" y="{yy + 10}">{p} {_fmt_s(v)}</text>')
        x = left + e["within_seconds"] * scale
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + 46}" stroke="#c53030" stroke-dasharray="4 3"/>'
        )
    parts.append(
        f'<text x="{left}" y="{h - 6}" class="muted">each edge on its own scale; dashed red: the edge\'s time limit (within)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def history_svg(rep: Report) -> str:
    hist = rep.history
    width, height, left, bottom = 900, 260, 50, 30
    kinds = sorted({k for h in hist for k in h["summary"]})
    top = max([v for h in hist for v in h["summary"].values()] + [1])
    parts = [
        f'<svg class="chart" data-chart="history" role="img" aria-label="findings over time" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    parts.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{height - bottom}" y2="{height - bottom}" stroke="#a0aec0"/>'
    )
    parts.append(
        f'<text x="{left - 6}" y="14" text-anchor="end">{top:,}</text><text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>'
    )
    n = len(hist)
    step = (width - left - 160) / max(1, n - 1)
    for ki, k in enumerate(kinds):
        color = PALETTE[ki % len(PALETTE)]
        pts = []
        for i, h in enumerate(hist):
            x = left + i * step
            y = height - bottom - (height - bottom - 10) * h["summary"].get(k, 0) / top
            pts.append(f"{x:.1f},{y:.1f}")
        if len(pts) == 1:
            cx, cy = pts[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="{color}"/>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>'
            )
        parts.append(
            f'<rect x="{width - 150}" y="{10 + ki * 18}" width="10" height="10" fill="{color}"/>'
        )
        parts.append(f'<text x="{width - 134}" y="{19 + ki * 18}">{escape(k)}</text>')
    if hist:
        parts.append(
            f'<text x="{left}" y="{height - 8}">run {hist[0]["run"]} ({escape(hist[0]["as_of"][:16])})</text>'
        )
        if n > 1:
            parts.append(
                f'<text x="{left + (n - 1) * step:.1f}" y="{height - 8}" text-anchor="end">run {hist[-1]["run"]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    th = "".join(
        f'<th class="{"n" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if i in numeric else ""}">{escape(str(v))}</td>'
            for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(rep: Report) -> str:
    total = sum(v["total"] for v in rep.findings_by_kind.values())
    risk = rep.at_risk
    cards = (
        f'<div class="cards"><div class="card">open findings<b>{total:,}</b></div>'
        f'<div class="card">orders at risk<b>{risk.get("orders", 0):,}</b></div>'
        f'<div class="card">{escape(str(risk.get("field", "amount")))} at risk<b>{risk.get("amount", 0):,.2f}</b></div>'
        f'<div class="card">incidents<b>{len(rep.incidents)}</b></div></div>'
    )
    edge_rows = [
        [f"{e['from']} → {e['to']}", e["passed"], e["vanished"], e["stalled"], e["late"],
         _fmt_s(e["latency_seconds"]["p50"]), _fmt_s(e["latency_seconds"]["p95"]), _fmt_s(e["latency_seconds"]["p99"]),
         _fmt_s(e["within_seconds"])]
        for e in rep.edges
    ]  # fmt: skip
    ages = ["< 1h", "1h–1d", "1d–7d", "> 7d"]
    kind_rows = [[k, *(v[a] for a in ages), v["total"]] for k, v in rep.findings_by_kind.items()]
    inc_rows = [
        [i["kind"], i["hop"], i["orders"], (i["since"] or "-")[:16], i["detail"]]
        for i in rep.incidents
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>ordertrail report — {escape(rep.pipeline)}</title><style>{CSS}</style></head>
<body>
<h1>ordertrail report: {escape(rep.pipeline)}</h1>
<p class="muted">as of {escape((rep.as_of and __import__("ordertrail.schemas.event", fromlist=["x"]).us_to_iso(rep.as_of)) or "")}</p>
{cards}
<h2>Funnel: orders per hop</h2>
{funnel_svg(rep)}
<h2>Edges: passed, lost, stalled, latency</h2>
{_table(["edge", "passed", "vanished", "stalled", "late", "p50", "p95", "p99", "within"], edge_rows, {1, 2, 3, 4})}
{latency_svg(rep)}
<h2>Open findings by kind and age</h2>
{_table(["kind", *ages, "total"], kind_rows, {1, 2, 3, 4, 5}) if kind_rows else "<p>No open findings.</p>"}
<h2>Findings over time (per run)</h2>
{history_svg(rep)}
<h2>Incidents (latest run)</h2>
{_table(["incident", "hop", "orders", "since", "detail"], inc_rows, {2}) if inc_rows else "<p>None.</p>"}
</body></html>
"""
