"""Prometheus metrics at ``/metrics``, read from the store on each scrape.

A collector of its own registry (never the process-global one) turns a few cheap queries into
gauges: active findings by kind and hop, the latest run's incidents, source watermarks and their
lag, the last run's time and duration, the notifications outbox. Events and quarantined records
per source count rows of big tables, so they are cached for ``cache_seconds`` (60 s by default).
Counters of this process (notification attempts, scheduled runs) live in the same registry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ordertrail.schemas.config import Config
from ordertrail.store import Store, outbox, serving

logger = logging.getLogger(__name__)

S = 1_000_000


class StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(
        self, store: Store, config: Config, clock: Callable[[], int], cache_seconds: float = 60.0
    ):
        self.store = store
        self.config = config
        self.clock = clock  # µs: now, or the server's fixed --as-of
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._counts: tuple[float, dict[str, int], dict[str, int]] | None = None

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store

    def _source_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            if self._counts is None or time.monotonic() - self._counts[0] > self.cache_seconds:
                self._counts = (
                    time.monotonic(),
                    self.store.events_per_source(),
                    self.store.quarantine_per_source(),
                )
            return self._counts[1], self._counts[2]

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:  # a scrape shows what it can; the error is in the log
            logger.exception("metrics: reading the store failed")
            up = GaugeMetricFamily("ordertrail_store_up", "1 when the store could be read")
            up.add_metric([], 0)
            yield up

    def _collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.store.engine.connect() as conn:
            counts = serving.active_counts(conn)
            run = serving.latest_run(conn)
            incidents = serving.run_incidents(conn, int(run["id"])) if run else []
            notes = outbox.summary(conn)
        up = GaugeMetricFamily("ordertrail_store_up", "1 when the store could be read")
        up.add_metric([], 1)
        yield up

        g = GaugeMetricFamily(
            "ordertrail_findings", "Active (new or open) findings", labels=["kind", "hop"]
        )
        for kind, hop, n in counts:
            g.add_metric([kind, hop], n)
        yield g

        inc = GaugeMetricFamily(
            "ordertrail_incidents", "Incidents of the latest run", labels=["kind", "hop"]
        )
        inc_orders = GaugeMetricFamily(
            "ordertrail_incident_orders",
            "Orders an incident of the latest run holds (stalled, or waiting for a source)",
            labels=["kind", "hop"],
        )
        per: dict[tuple[str, str], list[int]] = {}
        for i in incidents:
            p = per.setdefault((i["kind"], i["hop"]), [0, 0])
            p[0] += 1
            p[1] += int(i["orders"])
        for (kind, hop), (n, orders) in sorted(per.items()):
            inc.add_metric([kind, hop], n)
            inc_orders.add_metric([kind, hop], orders)
        yield inc
        yield inc_orders

        wms = self.store.watermarks()
        names = [s.name for s in self.config.sources] or sorted(wms)
        lag = GaugeMetricFamily(
            "ordertrail_source_watermark_lag_seconds",
            "How far a source's watermark is behind now (+Inf: never read to its end)",
            labels=["source"],
        )
        wm = GaugeMetricFamily(
            "ordertrail_source_watermark_timestamp_seconds",
            "The time up to which a source is known to be complete",
            labels=["source"],
        )
        for name in names:
            w = wms.get(name)
            if w is None:
                lag.add_metric([name], math.inf)
            else:
                lag.add_metric([name], max(0.0, (now - w) / S))
                wm.add_metric([name], w / S)
        yield lag
        yield wm

        events, quarantined = self._source_counts()
        ev = GaugeMetricFamily(
            "ordertrail_source_events", "Events stored per source", labels=["source"]
        )
        q = GaugeMetricFamily(
            "ordertrail_source_quarantined", "Records in quarantine per source", labels=["source"]
        )
        for name in sorted(set(names) | set(events) | set(quarantined)):
            ev.add_metric([name], events.get(name, 0))
            q.add_metric([name], quarantined.get(name, 0))
        yield ev
        yield q

        if run is not None:
            for name, doc, value in (
                ("ordertrail_last_run_timestamp_seconds", "When the latest reconcile run "
                 "finished", (run["finished_at"] or run["started_at"]) / S),
                ("ordertrail_last_run_as_of_timestamp_seconds", "The time the latest run judged "
                 "as of", run["as_of"] / S),
                ("ordertrail_last_run_duration_seconds", "How long the latest run took",
                 max(0, (run["finished_at"] or run["started_at"]) - run["started_at"]) / S),
                ("ordertrail_last_run_orders", "Orders the latest run judged", run["orders"]),
                ("ordertrail_last_run_events", "Events the latest run read", run["events"]),
                ("ordertrail_last_run_id", "The id of the latest run", run["id"]),
            ):  # fmt: skip
                m = GaugeMetricFamily(name, doc)
                m.add_metric([], float(value))
                yield m

        nf = GaugeMetricFamily(
            "ordertrail_notifications",
            "Notifications in the outbox by target and status (pending: not delivered yet)",
            labels=["target", "status"],
        )
        for row in notes:
            nf.add_metric([row["target"], row["status"]], row["rows"])
        yield nf


class ServeMetrics:
    """The registry of one server: the store's gauges and this process's counters."""

    def __init__(
        self, store: Store, config: Config, clock: Callable[[], int], cache_seconds: float = 60.0
    ):
        self.registry = CollectorRegistry()
        self.collector = StoreCollector(store, config, clock, cache_seconds)
        self.registry.register(self.collector)
        self.notify_attempts = Counter(
            "ordertrail_notify_attempts",
            "Notification messages this process tried to send, by target and outcome",
            ["target", "outcome"],
            registry=self.registry,
        )
        self.scheduled_runs = Counter(
            "ordertrail_scheduled_runs",
            "Reconcile runs started by serve --every (or the reconcile button), by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def on_attempt(self, target: str, ok: bool, events: int) -> None:
        self.notify_attempts.labels(target, "sent" if ok else "failed").inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
