"""Many rows in one statement through the driver's ``executemany``.

SQLAlchemy's executemany builds a parameter dictionary per row (about 8 µs each); for the
hundred thousand findings or in-flight orders of a large run that is seconds. Here the rows
go to the driver as tuples. Table and column names are ours, never data; values are always
bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def insert_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    batch: int = 20_000,
) -> None:
    """INSERT the rows; with ``conflict`` (a unique key) rows already there get ``update``d
    columns from the new row (SQLite and PostgreSQL share the syntax)."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, columns))}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(map(_ident, conflict))}) "
        sql += (
            "DO UPDATE SET " + ", ".join(f"{_ident(c)} = excluded.{_ident(c)}" for c in update)
            if update
            else "DO NOTHING"
        )
    for k in range(0, len(rows), batch):
        conn.exec_driver_sql(sql, [tuple(r) for r in rows[k : k + batch]])
