"""Kafka -> store throughput of one collector process, beside kcat reading the same topic.

    python -m bench.kafka --events 1000000 [--bootstrap HOST:PORT] [--pg URL]

Starts scripts/kafka.sh's broker unless --bootstrap is given; produces N small JSON events over 6
partitions (untimed), then times `ordertrail collect --max-messages N` into SQLite (and into
PostgreSQL with --pg), and `kcat -C -e` reading the topic to /dev/null as the reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from bench.common import DATA, ROOT, machine, measure_isolated

CONFIG = """
[pipeline]
name = "bench"
[[hops]]
name = "payment"
[[sources]]
name = "payments"
kind = "kafka"
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
batch_size = 5000
hop = "payment"
order_id = "order.id"
timestamp = "ts"
event_id = "id"
attributes = ["amount"]
"""


def produce(bootstrap: str, topic: str, n: int) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 6, 1)])
    admin.close()
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1)
    for i in range(n):
        p.send(
            topic,
            orjson.dumps(
                {
                    "id": f"e{i}",
                    "order": {"id": f"o{i}"},
                    "ts": 1_772_366_400_000 + i,
                    "amount": i % 97,
                }
            ),
        )
    p.flush()
    p.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--bootstrap")
    ap.add_argument("--pg", default=os.environ.get("ORDERTRAIL_TEST_PG_URL"))
    a = ap.parse_args()
    bootstrap = a.bootstrap
    if not bootstrap:
        out = subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), "start"],
            check=True,
            capture_output=True,
            text=True,
        )
        bootstrap = out.stdout.strip().splitlines()[-1]
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, a.events)
    d = DATA / "kafka"
    d.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "ordertrail")
    rows = []
    targets = [("SQLite", f"sqlite:///{d / 'bench.db'}")]
    for p in d.glob("bench.db*"):
        p.unlink()
    if a.pg:
        from sqlalchemy import create_engine, text

        eng = create_engine(a.pg, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text('DROP DATABASE IF EXISTS "ot_bench_kafka" WITH (FORCE)'))
            c.execute(text('CREATE DATABASE "ot_bench_kafka"'))
        targets.append(("PostgreSQL", a.pg.rsplit("/", 1)[0] + "/ot_bench_kafka"))
    for name, url in targets:
        cfg = d / f"{name}.toml"
        cfg.write_text(CONFIG.format(topic=topic, bootstrap=bootstrap, group=f"g-{name}-{topic}"))
        m = measure_isolated([exe, "--config", str(cfg), "--db", url, "collect", "payments",
                              "--max-messages", str(a.events), "--format", "json"])  # fmt: skip
        rows.append((f"ordertrail collect -> {name}", m.seconds, m.peak_rss_mb))
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat:
        cmd = f"{kcat} -C -b {bootstrap} -t {topic} -o beginning -e -q > /dev/null"
        m = measure_isolated(["sh", "-c", cmd])
        rows.append(("kcat -C to /dev/null (reference)", m.seconds, m.peak_rss_mb))
    print(f"machine: {machine()}")
    print(f"events: {a.events:,} over 6 partitions")
    print(f"{'run':40} {'seconds':>8} {'events/s':>10} {'peak RSS MB':>12}")
    for name, s, rss in rows:
        print(f"{name:40} {s:8.2f} {a.events / s:10,.0f} {rss:12.0f}")
    if kcat:
        print(f"ratio ordertrail(SQLite) / kcat: {rows[0][1] / rows[-1][1]:.1f}x the time")
    else:
        print("kcat not installed (apt-get install -y kcat): no reference run")


if __name__ == "__main__":
    main()
