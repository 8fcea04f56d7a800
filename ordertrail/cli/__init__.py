"""The ``ordertrail`` command: click commands that parse, make one library call and render."""

from __future__ import annotations

from ordertrail.cli.main import cli, main

__all__ = ["cli", "main"]
