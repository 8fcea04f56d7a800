"""The example config that ``ordertrail init`` writes (DESIGN.md's, commented)."""

from __future__ import annotations

EXAMPLE_CONFIG = """\
# ordertrail config: the hops of your order pipeline and where their events come from.
# Durations: 90s, 15m, 24h, 2d. Times in records: ISO-8601 or epoch s/ms.

[store]
url = "sqlite:///ordertrail.db"        # ORDERTRAIL_DB_URL or --db override; postgresql+psycopg://… for PostgreSQL
# retention = "90d"                    # `ordertrail prune` removes what is older (at least the lookback)
# prune_after_ingest = true            # ... and `ordertrail ingest` prunes when it is done

[pipeline]
name = "web-orders"
clock_skew = "2m"                      # tolerance before out_of_order
lookback = "30d"                       # window reconcile loads
# timezone = "UTC"                     # for timestamps written without an offset
# personal = ["customer.email"]        # attributes masked by --redact

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"                         # each next hop must be reached this long after this hop

[[hops]]
name = "payment"
next = ["confirmation", "fulfillment"]
within = { confirmation = "5m", fulfillment = "24h" }   # per-edge form
unique = true                          # a second distinct payment is a duplicate (double charge)

[[hops]]
name = "confirmation"
promises = ["fulfillment"]             # the customer was told this: these hops must follow
promise_within = "48h"

[[hops]]
name = "fulfillment"
next = ["shipping"]
within = "48h"

[[hops]]
name = "shipping"                      # no next: a terminal hop

[[hops]]
name = "cancelled"
closes = true                          # reaching it ends every expectation for the order

[[checks]]
field = "amount"                       # attribute that must agree across hops
hops = ["checkout", "payment"]
tolerance = 0.01

[[sources]]
name = "payments"
kind = "kafka"                         # kafka | file | otlp
topic = "payments"
bootstrap_servers = "localhost:9092"
hop = "payment"                        # constant hop, or hop_field = "stage" (+ optional hop_map)
order_id = "order.id"                  # dotted path into the record
timestamp = "ts"
event_id = "id"                        # optional
phase = "phase"                        # optional field holding started|completed|failed
attributes = ["amount", "customer.email"]

[[sources]]
name = "warehouse"
kind = "file"
path = "data/warehouse/*.jsonl"        # glob; .gz accepted
format = "jsonl"                       # jsonl | csv
hop = "fulfillment"
order_id = "orderId"
timestamp = "packedAt"
"""
