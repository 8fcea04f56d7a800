"""Masking of personal attributes (``[pipeline] personal``) for ``--redact``.

An attribute is personal when its path names a personal entry exactly (``customer.email``),
ends with it (``email`` covers ``customer.email``), or lies inside it (``customer`` covers
``customer.email`` and every field of an object stored under ``customer``). Redaction works on
structured data — event attributes, findings' evidence — and a finding's detail is rendered again
from its redacted evidence, so no output (table, JSON, CSV, HTML, web page, notification) can
carry the original value. Order and object ids are ids, never masked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def mask(value: Any) -> Any:
    """``mary@example.com`` -> ``m***@example.com``; ``Mary Smith`` -> ``M***``; objects and
    lists are masked field by field."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    s = str(value)
    if "@" in s:
        local, _, domain = s.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{s[:1]}***" if s else s


def is_personal(path: str, personal: Iterable[str]) -> bool:
    """Whether the attribute at dotted ``path`` is personal."""
    return any(path == q or path.endswith("." + q) or path.startswith(q + ".") for q in personal)


def redact_value(path: str, value: Any, personal: Iterable[str]) -> Any:
    """``value`` stored at ``path``, with every personal part masked."""
    personal = tuple(personal)
    if is_personal(path, personal):
        return mask(value)
    if isinstance(value, dict):
        return {k: redact_value(f"{path}.{k}", v, personal) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(path, v, personal) for v in value]
    return value


def redact_attributes(attrs: Mapping[str, Any], personal: Iterable[str]) -> dict[str, Any]:
    personal = tuple(personal)
    return {k: redact_value(k, v, personal) for k, v in attrs.items()}


def redact_finding(f: dict[str, Any], personal: Iterable[str]) -> dict[str, Any]:
    """A finding (a dict in reconcile's JSON shape) with personal values masked in its
    evidence and its detail rendered again from the redacted evidence."""
    from ordertrail.reconcile.render import render_detail

    personal = tuple(personal)
    if not personal:
        return f
    ev = dict(f.get("evidence") or {})
    fld = f.get("field")
    if fld and is_personal(fld, personal):
        for k in ("base_value", "value"):
            if k in ev:
                ev[k] = mask(ev[k])
    out = {**f, "evidence": ev}
    if ev:
        out["detail"] = render_detail(
            f["kind"], f["hop"], f.get("from_hop"), fld, list(f.get("objects") or []), ev
        )
    elif fld and is_personal(fld, personal):
        out["detail"] = f"{fld} differs between hops (values redacted)"
    return out
