"""The Kafka collector on a real Apache Kafka 4.x broker: exactly once into the store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from ordertrail.collectors.kafka import CollectOptions, KafkaCollector
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from tests.conftest import ROOT

pytestmark = pytest.mark.kafka

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_topic(bootstrap: str, partitions: int = 6) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"orders-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    return name


def produce(bootstrap: str, topic: str, n: int, start: int = 0, bad_every: int = 0) -> int:
    """Produce n JSON events (some malformed); return how many are well-formed."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks="all")
    good = 0
    for i in range(start, start + n):
        if bad_every and i % bad_every == 0:
            value = b'{"order": {"id": "broken"'
        else:
            value = orjson.dumps(
                {
                    "id": f"e{i}",
                    "order": {"id": f"o{i}"},
                    "ts": 1_772_366_400_000 + i,
                    "amount": i % 90,
                }
            )
            good += 1
        p.send(topic, value=value, key=f"o{i}".encode(), headers=[("traceparent", TP.encode())])
    p.flush()
    p.close()
    return good


def write_config(d: Path, bootstrap: str, topic: str, group: str | None = None) -> Path:
    cfg = d / "ordertrail.toml"
    cfg.write_text(f"""
[pipeline]
name = "k"
[[hops]]
name = "payment"
[[sources]]
name = "payments"
kind = "kafka"
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
group_id = "{group or "g-" + topic}"
batch_size = 2000
hop = "payment"
order_id = "order.id"
timestamp = "ts"
event_id = "id"
attributes = ["amount"]
options = {{ session_timeout_ms = 6000, heartbeat_interval_ms = 1000, max_poll_interval_ms = 30000 }}
""")
    return cfg


def counts(url: str) -> tuple[int, int]:
    try:
        with Store(url, create=False) as s:
            return s.count_events(), s.count_quarantine()
    except Exception:  # the schema may not exist yet
        return 0, 0


def wait_for_events(url: str, n: int, seconds: float = 90, proc: Any = None) -> None:
    """Until the store holds n events (or time runs out, or ``proc`` has exited)."""
    deadline = time.monotonic() + seconds
    while (
        time.monotonic() < deadline and (proc is None or proc.poll() is None) and counts(url)[0] < n
    ):
        time.sleep(0.01)


def collect_cmd(cfg: Path, url: str, idle: float = 8) -> list[str]:
    return [sys.executable, "-m", "ordertrail", "--config", str(cfg), "--db", url, "collect", "payments",
            "--idle-timeout", str(idle), "--format", "json"]  # fmt: skip


def test_100k_events_over_6_partitions_exactly(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 6)
    n = 100_000
    good = produce(bs, topic, n, bad_every=10_007)
    cfg = load_config(write_config(tmp_path, bs, topic))
    with Store(sqlite_url) as s:
        rep = KafkaCollector(s, cfg, cfg.sources[0], CollectOptions(idle_timeout=5)).run()
        assert (rep.records, rep.stored, rep.quarantined) == (n, good, n - good)
        assert s.count_events() == good
        q = s.quarantine_rows()
        assert all(
            r["source_ref"].startswith(f"{topic}:") and r["source_ref"].count(":") == 2 for r in q
        )
        assert all("malformed JSON" in r["reason"] for r in q)
        e = s.order_events("o1")[0]
        assert e.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and e.span_id == "00f067aa0ba902b7"
        assert e.source_ref.startswith(f"{topic}:")
        wm = s.watermarks()["payments"]
        assert wm is not None and abs(wm / 1e6 - time.time()) < 120
        parts = [k for k in s.checkpoints("payments") if k]
        assert len(parts) == 6
    # a second run finds nothing new
    with Store(sqlite_url) as s:
        rep = KafkaCollector(s, cfg, cfg.sources[0], CollectOptions(idle_timeout=3)).run()
        assert rep.records == 0 and s.count_events() == good


def test_sigkill_at_random_points_loses_and_doubles_nothing(
    kafka: dict[str, Any], tmp_path: Path, store_url: str
) -> None:
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 6)
    n = 60_000
    good = produce(bs, topic, n, bad_every=5003)
    cfg = write_config(tmp_path, bs, topic)
    rng = random.Random(7)
    kills = 0
    target = 0
    while kills < 5:
        p = subprocess.Popen(
            collect_cmd(cfg, store_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        target = min(good - 1, target + rng.randint(3000, 9000))
        wait_for_events(store_url, target, proc=p)
        if p.poll() is None:
            time.sleep(rng.random() * 0.3)  # somewhere inside a batch
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        if counts(store_url)[0] >= good:
            break
    assert kills >= 5
    done = subprocess.run(
        collect_cmd(cfg, store_url, idle=5), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert counts(store_url) == (good, n - good)
    with Store(store_url) as s:
        assert s.count_orders() == good


def test_two_collectors_one_killed(kafka: dict[str, Any], tmp_path: Path, sqlite_url: str) -> None:
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 6)
    n = 60_000
    good = produce(bs, topic, n)
    cfg = write_config(tmp_path, bs, topic)
    # both in one group; the survivor waits long enough to take over the dead one's partitions
    a = subprocess.Popen(
        collect_cmd(cfg, sqlite_url, idle=25), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    b = subprocess.Popen(
        collect_cmd(cfg, sqlite_url, idle=25), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for_events(sqlite_url, n // 3)
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    _, err = a.communicate(timeout=240)
    assert a.returncode == 0, err
    assert counts(sqlite_url) == (good, 0)


def test_broker_restart_mid_consumption(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    if not kafka["managed"]:
        pytest.skip("the broker is external: this test restarts the broker it started")
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 6)
    n = 60_000
    good = produce(bs, topic, n)
    cfg = write_config(tmp_path, bs, topic)
    p = subprocess.Popen(
        collect_cmd(cfg, sqlite_url, idle=40), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for_events(sqlite_url, n // 4)
    env: dict[str, str] = kafka["env"]  # type: ignore[assignment]
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "restart"], check=True, env=env, timeout=300,
                   capture_output=True)  # fmt: skip
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert counts(sqlite_url) == (good, 0)


def test_sigterm_finishes_the_batch_and_exits_0(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 2)
    good = produce(bs, topic, 20_000)
    cfg = write_config(tmp_path, bs, topic)
    p = subprocess.Popen(
        collect_cmd(cfg, sqlite_url, idle=60), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for_events(sqlite_url, 2000, 60)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    stored = orjson.loads(out)["sources"][0]["stored"]
    assert counts(sqlite_url)[0] == stored
    # the committed position is where the store is: the next run reads the rest, once
    subprocess.run(
        collect_cmd(cfg, sqlite_url, idle=4), check=True, capture_output=True, timeout=120
    )
    assert counts(sqlite_url) == (good, 0)


def test_max_messages_and_status_lag(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 3)
    produce(bs, topic, 5000)
    cfgp = write_config(tmp_path, bs, topic)
    cmd = [sys.executable, "-m", "ordertrail", "--config", str(cfgp), "--db", sqlite_url, "collect",
           "payments", "--max-messages", "1200", "--format", "json"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["sources"][0]["records"] == 1200
    assert counts(sqlite_url)[0] == 1200
    r = subprocess.run([sys.executable, "-m", "ordertrail", "--config", str(cfgp), "--db", sqlite_url,
                        "status", "--format", "json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    st = orjson.loads(r.stdout)["sources"][0]
    assert st["kind"] == "kafka" and st["events"] == 1200 and st["checkpoint"]["partitions"] == 3
    assert st["lag"] == 5000 - 1200 and st["lag_unit"] == "messages"


def test_unreachable_broker_is_exit_3(tmp_path: Path, sqlite_url: str) -> None:
    cfg = write_config(tmp_path, "127.0.0.1:1", "nowhere")
    text = cfg.read_text().replace("batch_size = 2000", "batch_size = 2000\npoll_timeout = 0.5")
    cfg.write_text(text)
    env = {**os.environ, "ORDERTRAIL_KAFKA_CONNECT_TIMEOUT": "3"}
    r = subprocess.run(
        collect_cmd(cfg, sqlite_url, idle=2), capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 3, r.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in r.stderr and "Traceback" not in r.stderr


def test_store_outage_mid_consumption(kafka: dict[str, Any], tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL refuses connections for a while: the collector retries, commits no offset it has
    not stored, and ends with exactly the produced events."""
    from sqlalchemy import create_engine, text

    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 3)
    good = produce(bs, topic, 40_000)
    cfg = write_config(tmp_path, bs, topic)
    db = pg_url.rsplit("/", 1)[1]
    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    p = subprocess.Popen(
        collect_cmd(cfg, pg_url, idle=20), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for_events(pg_url, 5000)
    with admin.connect() as c:
        c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false'))
        c.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        )
    time.sleep(6)
    with admin.connect() as c:
        c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'))
    admin.dispose()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-3000:]
    assert b"store unavailable" in err
    assert counts(pg_url) == (good, 0)
