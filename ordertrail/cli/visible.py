"""Record text made safe for a terminal: control and invisible characters shown as escapes.

Raw records come from anywhere; an escape sequence in one must never reach the terminal as such
(it could recolour, move the cursor or rewrite the title), and a bidi override or a zero-width
character must not hide what a record says. Such characters are shown as ``\\x1b``, ``\\n``,
``\\u202e`` …; on a terminal the escapes are highlighted so they stand apart from a record's own
backslashes. Everything is rich ``Text``: never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

ESCAPE_STYLE = "reverse"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named:
        return named
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _unsafe(ch: str) -> bool:
    return ch != " " and not ch.isprintable()


def visible(text: str) -> str:
    """``text`` with every control or invisible character written as an escape."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def visible_text(text: str, style: str = "") -> Text:
    """``text`` as rich Text: escapes highlighted, nothing read as markup."""
    out = Text(style=style)
    if text.isprintable():
        out.append(text)
        return out
    run: list[str] = []
    for ch in text:
        if _unsafe(ch):
            if run:
                out.append("".join(run))
                run = []
            out.append(_escape(ch), style=ESCAPE_STYLE)
        else:
            run.append(ch)
    if run:
        out.append("".join(run))
    return out


def text_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[str] = (),
) -> Table:
    """A table like :func:`ordertrail.cli.render.table` whose cells are record text: every cell is
    escaped with :func:`visible_text`, so nothing in it is read as markup."""
    nums = set(numeric)
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in nums else "left", overflow="fold")
    for r in rows:
        t.add_row(*(x if isinstance(x, Text) else visible_text(str(x)) for x in r))
    return t
