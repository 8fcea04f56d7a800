"""Data shapes shared by every part: the OrderEvent, the pipeline config, durations."""

from __future__ import annotations

from ordertrail.schemas.config import (
    Check,
    Config,
    Hop,
    PipelineSettings,
    SourceConfig,
    load_config,
    parse_config,
)
from ordertrail.schemas.durations import format_duration, parse_duration
from ordertrail.schemas.event import OrderEvent, Phase, QuarantineRecord

__all__ = [
    "Check",
    "Config",
    "Hop",
    "OrderEvent",
    "Phase",
    "PipelineSettings",
    "QuarantineRecord",
    "SourceConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]
