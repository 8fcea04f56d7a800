"""ordertrail finds lost orders.

Collectors bring the events every hop of an order pipeline leaves into one SQL store; the
reconciliation engine matches them order by order and says which orders stalled, vanished
between two hops, or were confirmed without being fulfilled — and where.
"""

from __future__ import annotations

from ordertrail.errors import (
    ConfigError,
    OrdertrailError,
    SourceError,
    StoreError,
)
from ordertrail.schemas.config import Config, load_config
from ordertrail.schemas.event import OrderEvent, Phase

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "OrderEvent",
    "OrdertrailError",
    "Phase",
    "SourceError",
    "StoreError",
    "__version__",
    "load_config",
]
