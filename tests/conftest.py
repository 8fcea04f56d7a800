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
from typing import Any

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


def start_service(
    script: str, what: str, problems: list[str], timeout: int, env: dict[str, str] | None = None
) -> str | None:
    """Run ``scripts/<script> start``; its last output line is the address. None on failure."""
    try:
        out = subprocess.run(
            [str(ROOT / "scripts" / script), "start"],
            check=True, capture_output=True, text=True, timeout=timeout, env=env,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        err = getattr(e, "stderr", "") or str(e)
        problems.append(f"cannot start {what}: {str(err).strip()[-1500:]}")
        return None
    return out.stdout.strip().splitlines()[-1]


def require_service(value: Any, problems: list[str], what: str) -> Any:
    """The service, or a failure under CI=true, or a skip on a developer's machine."""
    if value:
        return value
    msg = problems[0] if problems else f"no {what}"
    if IN_CI:
        pytest.fail(f"CI=true and {what} is required: {msg}")
    pytest.skip(f"{what} not available: {msg}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    url = os.environ.get("ORDERTRAIL_TEST_PG_URL") or start_service(
        "postgres.sh", "PostgreSQL", _pg_problem, 120
    )
    if url:
        try:
            eng = create_engine(url)
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
        except Exception as e:
            _pg_problem.append(f"cannot reach PostgreSQL at {url}: {e}")
            url = None
    yield url  # the cluster is shared with later runs; scripts/postgres.sh stop ends it


@pytest.fixture
def pg_url(pg_server: str | None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    base = str(require_service(pg_server, _pg_problem, "PostgreSQL"))
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
    for name, problems in (
        ("POSTGRESQL", _pg_problem), ("KAFKA", _kafka_problem), ("SPARK", _spark_problem),
    ):  # fmt: skip
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
        info["bootstrap"] = start_service("kafka.sh", "Kafka", _kafka_problem, 600, env)
        info["managed"] = info["bootstrap"] is not None
    yield info
    if info["managed"]:
        subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), "stop"], env=env, timeout=120, check=False
        )


@pytest.fixture
def kafka(kafka_broker: dict[str, object]) -> dict[str, object]:
    require_service(kafka_broker["bootstrap"], _kafka_problem, "Kafka")
    return kafka_broker


# -- Spark ---------------------------------------------------------------------------------------
_spark_problem: list[str] = []


@pytest.fixture(scope="session")
def spark_session() -> Iterator[object | None]:
    """One SparkSession in local[2] for the whole run (Spark takes seconds to start), with the
    PostgreSQL JDBC driver fetched by scripts/jdbc.sh (from Maven Central, cached in .cache/)."""
    try:
        import pyspark  # noqa: F401

        from ordertrail.reconcile.spark import SparkUnavailable, check_java, start_session
    except ImportError:
        _spark_problem.append("pyspark is not installed (pip install -e '.[spark]')")
        yield None
        return
    try:
        check_java()
    except SparkUnavailable as e:
        _spark_problem.append(str(e))
        yield None
        return
    jar = os.environ.get("ORDERTRAIL_JDBC_JAR") or start_service(
        "jdbc.sh", "the PostgreSQL JDBC driver", _spark_problem, 600
    )
    if not jar:
        yield None
        return
    os.environ["ORDERTRAIL_JDBC_JAR"] = jar
    from ordertrail.schemas.config import EngineSettings

    session = start_session(EngineSettings(), "local[2]", jdbc=True)
    yield session
    session.stop()


@pytest.fixture
def spark(spark_session: object | None) -> object:
    return require_service(spark_session, _spark_problem, "Spark (Java 17 and pyspark)")
