"""Exceptions raised by the library; the CLI turns them into one-line messages and exit codes.

    OrdertrailError            base class; exit code 3 unless a subclass says otherwise
    ├── ConfigError            bad config file or option (exit 2): names file, key and problem
    ├── StoreError             the SQL store is unreachable or refused a statement (exit 3)
    └── SourceError            a source cannot be read at all: missing file, broker down (exit 3)

Bad *records* are never exceptions: they become quarantine rows with their reason.
"""

from __future__ import annotations


class OrdertrailError(Exception):
    """Base class of every error ordertrail raises on purpose."""

    exit_code = 3


class ConfigError(OrdertrailError):
    """The configuration (file, option or environment) is invalid."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class StoreError(OrdertrailError):
    """The SQL store cannot be reached or used."""


class SourceError(OrdertrailError):
    """A source cannot be read at all (as opposed to one bad record in it)."""
