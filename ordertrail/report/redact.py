"""Masking of personal attributes (``[pipeline] personal``) for --redact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def mask(value: Any) -> Any:
    """``mary@example.com`` -> ``m***@example.com``; ``Mary Smith`` -> ``M***``."""
    if value is None:
        return None
    s = str(value)
    if "@" in s:
        local, _, domain = s.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{s[:1]}***" if s else s


def redact_attributes(attrs: Mapping[str, Any], personal: Iterable[str]) -> dict[str, Any]:
    keys = set(personal)
    return {k: (mask(v) if k in keys or k.split(".")[-1] in keys else v) for k, v in attrs.items()}
