"""Collectors: sources (file, kafka, otlp) -> mapping -> store writer; checkpoints; quarantine."""

from __future__ import annotations

from ordertrail.collectors.base import RawBatch, RawRecord, Source
from ordertrail.collectors.file import FileSource
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.runner import (
    IngestReport,
    file_sources,
    ingest_file_source,
    run_source,
)
from ordertrail.collectors.timestamps import parse_timestamp

__all__ = [
    "FileSource",
    "IngestReport",
    "Mapper",
    "RawBatch",
    "RawRecord",
    "Source",
    "file_sources",
    "ingest_file_source",
    "parse_timestamp",
    "run_source",
]
