"""Every command has help text and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from ordertrail.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_command_has_help_and_docs(name: str) -> None:
    cmd = cli.commands[name]
    assert cmd.help, f"{name} has no help text"
    assert f"ordertrail {name}" in README, f"{name} is missing from README.md"
    for p in cmd.params:
        if isinstance(p, click.Option):
            assert p.help or p.is_flag or p.name in ("fmt",) or p.type is not None


def test_exported_members() -> None:
    import ordertrail

    for name in ordertrail.__all__:
        assert hasattr(ordertrail, name), name
