"""Summaries of the store (status) and, later, the HTML report."""

from __future__ import annotations

from ordertrail.report.status import SourceStatus, StoreStatus, store_status

__all__ = ["SourceStatus", "StoreStatus", "store_status"]
