"""Fixtures: real stores (SQLite file and PostgreSQL), configs and file trees.

PostgreSQL: $ORDERTRAIL_TEST_PG_URL names an external server; otherwise scripts/postgres.sh
starts a private cluster from Debian's binaries. Without one the PostgreSQL tests skip with a
loud summary line, except under CI=true, where a missing server fails the run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_problem: list[str] = []

SMALL_CONFIG = """
[pipeline]
name = "t"

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"

[[hops]]
name = "payment"
next = ["shipping"]
within = "1h"
unique = true

[[hops]]
name = "shipping"

[[hops]]
name = "cancelled"
closes = true

[[sources]]
name = "orders"
kind = "file"
path = "in/*.jsonl*"
hop_field = "stage"
order_id = "order.id"
timestamp = "ts"
event_id = "id"
phase = "phase"
attributes = ["amount", "customer.name"]

[[sources]]
name = "ship"
kind = "file"
path = "ship.csv"
hop = "shipping"
order_id = "order"
timestamp = "at"
"""


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    url = os.environ.get("ORDERTRAIL_TEST_PG_URL")
    started = False
    if not url:
        try:
            out = subprocess.run(
                [str(ROOT / "scripts" / "postgres.sh"), "start"],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            url = out.stdout.strip().splitlines()[-1]
            started = True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            err = getattr(e, "stderr", "") or str(e)
            _pg_problem.append(f"cannot start PostgreSQL: {err.strip()}")
            url = None
    if url:
        try:
            eng = create_engine(url)
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
        except Exception as e:
            _pg_problem.append(f"cannot reach PostgreSQL at {url}: {e}")
            url = None
    yield url
    if started and os.environ.get("ORDERTRAIL_TEST_PG_KEEP") != "1":
        pass  # the cluster is shared with later runs; scripts/postgres.sh stop ends it


def _require_pg(url: str | None) -> str:
    if url:
        return url
    msg = _pg_problem[0] if _pg_problem else "no PostgreSQL"
    if IN_CI:
        pytest.fail(f"CI=true and PostgreSQL is required: {msg}")
    pytest.skip(f"PostgreSQL not available: {msg}")


@pytest.fixture
def pg_url(pg_server: str | None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    base = _require_pg(pg_server)
    name = f"ot_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[object]:
    from ordertrail.store import Store

    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with SMALL_CONFIG as ordertrail.toml and an empty in/ folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "ordertrail.toml").write_text(SMALL_CONFIG, encoding="utf-8")
    return tmp_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, problems in (("POSTGRESQL", _pg_problem), ("KAFKA", _kafka_problem)):
        if problems:
            terminalreporter.write_sep("!", f"{name} TESTS DID NOT RUN", red=True, bold=True)
            for p in problems:
                terminalreporter.write_line(p, red=True)


# -- Kafka ---------------------------------------------------------------------------------------
_kafka_problem: list[str] = []
KAFKA_TEST_PORT = os.environ.get("ORDERTRAIL_TEST_KAFKA_PORT", "59192")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[dict[str, object]]:
    """A real Kafka 4.x broker: $ORDERTRAIL_TEST_KAFKA, else one started by scripts/kafka.sh."""
    external = os.environ.get("ORDERTRAIL_TEST_KAFKA")
    env = {**os.environ, "KAFKA_PORT": KAFKA_TEST_PORT}
    info: dict[str, object] = {"bootstrap": external, "managed": False, "env": env}
    if not external:
        try:
            out = subprocess.run(
                [str(ROOT / "scripts" / "kafka.sh"), "start"],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
            )
            info["bootstrap"] = out.stdout.strip().splitlines()[-1]
            info["managed"] = True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            err = getattr(e, "stderr", "") or str(e)
            _kafka_problem.append(f"cannot start Kafka: {str(err).strip()[-1500:]}")
    yield info
    if info["managed"]:
        subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), "stop"], env=env, timeout=120, check=False
        )


@pytest.fixture
def kafka(kafka_broker: dict[str, object]) -> dict[str, object]:
    if not kafka_broker["bootstrap"]:
        msg = _kafka_problem[0] if _kafka_problem else "no Kafka broker"
        if IN_CI:
            pytest.fail(f"CI=true and Kafka is required: {msg}")
        pytest.skip(f"Kafka not available: {msg}")
    return kafka_broker
