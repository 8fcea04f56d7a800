"""The reference peer for reconcile: DuckDB reading the same store and classifying the overdue
edges of the v1-shaped pipeline (``bench.reconcile``'s CONFIG) in one query, as a whole command.

DuckDB's sqlite scanner extension is not available offline, so the store is read the way
ordertrail reads it — ADBC's SQLite driver into Arrow — and DuckDB queries the Arrow table.

    python -m bench.duckdb_ref STORE.db AS_OF_US      # prints the counts per hop and the seconds
"""

from __future__ import annotations

import sys
import time

DUCK_SQL = """
WITH firsts AS (
  SELECT order_id,
         min(occurred_at) FILTER (WHERE hop = 'checkout') AS checkout,
         min(occurred_at) FILTER (WHERE hop = 'payment') AS payment,
         min(occurred_at) FILTER (WHERE hop = 'confirmation') AS confirmation,
         min(occurred_at) FILTER (WHERE hop = 'fulfillment') AS fulfillment,
         min(occurred_at) FILTER (WHERE hop = 'shipping') AS shipping
  FROM ev WHERE phase = 'completed' GROUP BY order_id
), overdue AS (
  SELECT order_id, 'payment' AS hop, checkout AS a, checkout + 900000000 AS d FROM firsts
    WHERE checkout IS NOT NULL AND payment IS NULL AND checkout + 900000000 < $asof
  UNION ALL SELECT order_id, 'confirmation', payment, payment + 300000000 FROM firsts
    WHERE payment IS NOT NULL AND confirmation IS NULL AND payment + 300000000 < $asof
  UNION ALL SELECT order_id, 'fulfillment', payment, payment + 86400000000 FROM firsts
    WHERE payment IS NOT NULL AND fulfillment IS NULL AND payment + 86400000000 < $asof
  UNION ALL SELECT order_id, 'shipping', fulfillment, fulfillment + 172800000000 FROM firsts
    WHERE fulfillment IS NOT NULL AND shipping IS NULL AND fulfillment + 172800000000 < $asof
), progress AS (  -- per edge: the latest reach of the target among orders past each source time
  SELECT 'payment' AS hop, checkout AS a, payment AS b FROM firsts WHERE checkout IS NOT NULL AND payment IS NOT NULL
  UNION ALL SELECT 'confirmation', payment, confirmation FROM firsts WHERE payment IS NOT NULL AND confirmation IS NOT NULL
  UNION ALL SELECT 'fulfillment', payment, fulfillment FROM firsts WHERE payment IS NOT NULL AND fulfillment IS NOT NULL
  UNION ALL SELECT 'shipping', fulfillment, shipping FROM firsts WHERE fulfillment IS NOT NULL AND shipping IS NOT NULL
), stair AS (
  SELECT hop, a, max(b) OVER (PARTITION BY hop ORDER BY a DESC ROWS UNBOUNDED PRECEDING) AS sufmax
  FROM progress
), judged AS (
  SELECT o.hop, CASE WHEN s.sufmax > o.d THEN 'vanished' ELSE 'stalled' END AS kind
  FROM overdue o ASOF LEFT JOIN stair s ON o.hop = s.hop AND o.a < s.a
)
SELECT hop, kind, count(*) FROM judged GROUP BY ALL ORDER BY ALL
"""


def main() -> None:
    db, as_of = sys.argv[1], int(sys.argv[2])
    t0 = time.perf_counter()
    import adbc_driver_sqlite.dbapi as sqlite_adbc
    import duckdb

    conn = sqlite_adbc.connect(db)
    cur = conn.cursor()
    cur.execute("SELECT order_id, hop, phase, occurred_at FROM events")
    ev = cur.fetch_arrow_table()
    cur.close()
    conn.close()
    con = duckdb.connect()
    con.register("ev", ev)
    rows = con.execute(DUCK_SQL, {"asof": as_of}).fetchall()
    print({f"{h}:{k}": int(n) for h, k, n in rows}, f"{time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
