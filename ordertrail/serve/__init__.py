"""``ordertrail serve``: the web view for support staff, Prometheus ``/metrics``, and the
notifications sent after reconcile runs.

Names are imported on first use, so ``ordertrail reconcile`` (which only needs
:mod:`ordertrail.serve.notify`) does not load the web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Access": "ordertrail.serve.access",
    "AccessError": "ordertrail.serve.access",
    "ServeSettings": "ordertrail.serve.app",
    "create_app": "ordertrail.serve.app",
    "deliver_pending": "ordertrail.serve.notify",
    "notify_after_run": "ordertrail.serve.notify",
    "record_run": "ordertrail.serve.notify",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ordertrail.serve' has no attribute {name!r}")
