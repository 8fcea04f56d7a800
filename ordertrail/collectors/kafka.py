"""Kafka source: a consumer group member that stores each polled batch, with its offsets, in one
store transaction, and commits the offsets to Kafka only after that.

Exactly once into the store:
- the store holds every partition's next offset (checkpoint ``topic:partition``); on assignment
  the consumer seeks there, so records stored but not yet committed to Kafka are not read again;
- events carry idempotent ids, so even a replay would add nothing;
- callbacks of a rebalance run inside ``poll``, after the previous batch was stored, and commit
  the revoked partitions' offsets before they move to another member;
- each partition's count of records filtered by the source's ``where`` is kept with its offset,
  in the same transaction, so it is exact whatever crashes.

The source watermark is the wall-clock time at which the consumer last stood at the end of all
its partitions (kept per partition; the source's is the minimum over its partitions).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.runner import IngestReport, map_batch, record_write
from ordertrail.errors import SourceError, StoreError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.store import Checkpoint, Store
from ordertrail.store.writer import now_us

logger = logging.getLogger(__name__)

BACKOFF_MAX = 30.0


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


ENV_CONNECT_TIMEOUT = "ORDERTRAIL_KAFKA_CONNECT_TIMEOUT"


def _default_connect_timeout() -> float:
    import os

    return float(os.environ.get(ENV_CONNECT_TIMEOUT, "60"))


@dataclass
class CollectOptions:
    max_messages: int | None = None
    idle_timeout: float | None = None
    connect_timeout: float = field(default_factory=_default_connect_timeout)


class KafkaCollector:
    """Consumes one ``kind = "kafka"`` source into the store until stopped."""

    def __init__(
        self,
        store: Store,
        config: Config,
        source: SourceConfig,
        options: CollectOptions | None = None,
    ):
        if source.kind != "kafka":
            raise ValueError(f"source {source.name!r} is not a kafka source")
        self.store = store
        self.source = source
        self.mapper = Mapper(source, config.hop_names)
        self.options = options or CollectOptions()
        self.report = IngestReport(source.name)
        self.stop_event = threading.Event()
        self.consumer: Any = None
        self.positions: dict[Any, int] = {}  # TopicPartition -> next offset stored
        self.filtered: dict[Any, int] = {}  # TopicPartition -> records filtered by ``where``
        self.joined_at: float | None = None  # when the group last gave us our partitions
        self.joining_since = time.monotonic()  # when the current (re)join began
        self._ends_checked = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Finish the current batch, commit, and leave (SIGTERM / SIGINT)."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.warning("signal %s: finishing the current batch, then stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _consumer_config(self) -> dict[str, Any]:
        s = self.source
        cfg: dict[str, Any] = {
            "bootstrap_servers": list(s.bootstrap_servers),
            "group_id": s.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": s.start,
            "max_poll_records": s.batch_size,
            "client_id": f"ordertrail-{s.name}",
        }
        cfg["bootstrap_timeout_ms"] = int(max(1.0, min(10.0, self.options.connect_timeout)) * 1000)
        cfg.update(s.options)  # SASL/SSL and tuning, passed through
        cfg["enable_auto_commit"] = False  # offsets are ours to commit
        return cfg

    def _connect(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

        unreachable: tuple[type[Exception], ...] = (KafkaTimeoutError, KafkaConnectionError)
        try:  # kafka-python 2.x
            from kafka.errors import NoBrokersAvailable

            unreachable = (*unreachable, NoBrokersAvailable)
        except ImportError:
            pass

        delay = 0.5
        deadline = time.monotonic() + self.options.connect_timeout
        while True:
            try:
                return KafkaConsumer(**self._consumer_config())
            except unreachable:
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    raise SourceError(
                        f"source {self.source.name}: cannot reach Kafka at "
                        f"{', '.join(self.source.bootstrap_servers)}"
                    ) from None
                logger.warning(
                    "source %s: no broker reachable; retrying in %.1fs", self.source.name, delay
                )
            except KafkaError as e:
                raise SourceError(f"source {self.source.name}: {e}") from None
            except TypeError as e:  # an unknown option in [sources.options]
                raise SourceError(f"source {self.source.name}: bad consumer option: {e}") from None
            time.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    # -- rebalance -----------------------------------------------------------------------
    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        collector = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                # nothing to flush: every polled batch is stored (with its offsets) before the
                # next poll, and the next owner seeks to the stored offsets. (No commit here:
                # kafka-python runs this callback on its IO thread, where commit would block.)
                for tp in revoked:
                    collector.positions.pop(tp, None)
                    collector.filtered.pop(tp, None)
                # a rebalance is under way: it can wait up to max.poll.interval.ms for a dead
                # member, and that wait is not idleness
                collector.joined_at = None
                collector.joining_since = time.monotonic()

            def on_partitions_assigned(self, assigned: Any) -> None:
                collector.joined_at = time.monotonic()
                cps = collector.store.checkpoints(collector.source.name)
                for tp in assigned:
                    cp = cps.get(tp_key(tp.topic, tp.partition))
                    if cp and "offset" in cp.position:
                        off = int(cp.position["offset"])
                        collector.consumer.seek(tp, off)
                        collector.positions[tp] = off
                    # the partition's count as stored with its offset: exact, never doubled
                    collector.filtered[tp] = int(cp.position.get("filtered", 0)) if cp else 0
                logger.info("source %s: assigned %s", collector.source.name,
                            ", ".join(tp_key(tp.topic, tp.partition) for tp in assigned))  # fmt: skip

        return Listener()

    def _commit(self, tps: list[Any]) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {
            tp: OffsetAndMetadata(self.positions[tp], "", -1) for tp in tps if tp in self.positions
        }
        if not offsets or self.consumer is None:
            return
        try:
            self.consumer.commit(offsets)
        except (KafkaError, RuntimeError) as e:
            # harmless: the store holds the offsets, and we seek to them on assignment
            logger.warning(
                "source %s: offset commit failed (%s); the store keeps the position",
                self.source.name,
                e,
            )

    # -- the loop ------------------------------------------------------------------------
    def run(self, on_batch: Callable[[int], None] | None = None) -> IngestReport:
        from kafka.errors import KafkaError

        t0 = time.perf_counter()
        self.consumer = self._connect()
        s = self.source
        if s.topic_pattern:
            self.consumer.subscribe(pattern=s.topic_pattern, listener=self._listener())
        else:
            self.consumer.subscribe(topics=list(s.topics), listener=self._listener())
        last_data = self.joining_since = time.monotonic()
        try:
            while not self.stop_event.is_set():
                limit = s.batch_size
                if self.options.max_messages is not None:
                    limit = min(limit, self.options.max_messages - self.report.records)
                    if limit <= 0:
                        break
                polled = self.consumer.poll(
                    timeout_ms=int(s.poll_timeout * 1000), max_records=limit
                )
                records = sum(len(msgs) for msgs in polled.values())
                end_marks = self._end_marks(records < limit)
                if records or end_marks:
                    self._store(polled, end_marks)
                now = time.monotonic()
                if records:
                    last_data = now
                    if on_batch:
                        on_batch(records)
                elif self.joined_at is None:
                    # (re)joining the group: a rebalance waits for dead members' sessions, or
                    # for their max.poll.interval.ms
                    waited = now - self.joining_since
                    if waited > self._join_limit():
                        raise SourceError(
                            f"source {s.name}: no partitions assigned by group {s.group_id} "
                            f"after {waited:.0f}s"
                        )
                elif (
                    self.options.idle_timeout is not None
                    and now - max(last_data, self.joined_at) > self.options.idle_timeout
                ):
                    break
        except KafkaError as e:
            raise SourceError(f"source {s.name}: Kafka: {e}") from e
        finally:
            self._close()
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _join_limit(self) -> float:
        """How long a (re)join may take before we give up: the broker can wait for a dead member's
        session, and during a rebalance for its max.poll.interval.ms."""
        opts = self.source.options
        session = float(opts.get("session_timeout_ms", 45_000)) / 1000
        poll_interval = float(opts.get("max_poll_interval_ms", 300_000)) / 1000
        return max(self.options.connect_timeout, 2 * session, poll_interval + session)

    def _end_marks(self, maybe_at_end: bool) -> list[Checkpoint]:
        """Every assigned partition's position and end offset (for lag); a partition whose end
        we stand at gets the current time as its watermark. Asked after a short poll, and at
        least every few seconds while batches come in full."""
        now_m = time.monotonic()
        if not maybe_at_end and now_m - self._ends_checked < 5:
            return []
        self._ends_checked = now_m
        from kafka.errors import KafkaError

        assigned = list(self.consumer.assignment())
        if not assigned:
            return []
        try:
            ends = self.consumer.end_offsets(assigned)
            positions = {tp: self.consumer.position(tp) for tp in assigned}
        except KafkaError as e:
            logger.warning("source %s: cannot read end offsets (%s)", self.source.name, e)
            return []
        now = now_us()
        marks = []
        for tp in assigned:
            pos, end = positions.get(tp), ends.get(tp)
            if end is None or pos is None:
                continue
            self.positions.setdefault(tp, pos)
            key = tp_key(tp.topic, tp.partition)
            at_end = pos >= end
            position = {"offset": self.positions[tp], "end": end,
                        "filtered": self.filtered.get(tp, 0)}  # fmt: skip
            marks.append(Checkpoint(self.source.name, key, position, now if at_end else None))
        return marks

    def _store(self, polled: dict[Any, list[Any]], end_marks: list[Checkpoint]) -> None:
        """Store a polled batch with its offsets; retry while the store is down; then commit."""
        name = self.source.name
        recs = []
        owners: list[Any] = []  # the partition of each record
        new_pos = dict(self.positions)
        for tp, messages in polled.items():
            prefix = f"{tp.topic}:{tp.partition}:"
            for m in messages:
                headers = {}
                for k, v in m.headers or ():
                    try:
                        headers[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
                    except UnicodeDecodeError:
                        continue
                ref = prefix + str(m.offset)
                if m.value is None:
                    recs.append(
                        RawRecord(b"", ref, headers=headers, error="empty message (no value)")
                    )
                else:
                    recs.append(RawRecord(bytes(m.value), ref, headers=headers))
                owners.append(tp)
            if messages:
                new_pos[tp] = messages[-1].offset + 1
        batch = RawBatch(recs, [])
        rows, bad, filtered = map_batch(self.mapper, batch)
        new_filtered = dict(self.filtered)
        for i in filtered:
            new_filtered[owners[i]] = new_filtered.get(owners[i], 0) + 1
        marks = {c.key: c for c in end_marks}
        for tp, off in new_pos.items():
            key = tp_key(tp.topic, tp.partition)
            c = marks.pop(key, None)
            pos = {"offset": off, **({"end": c.position["end"]} if c else {}),
                   "filtered": new_filtered.get(tp, 0)}  # fmt: skip
            batch.checkpoints.append(Checkpoint(name, key, pos, c.watermark if c else None))
        batch.checkpoints.extend(marks.values())
        delay = 0.5
        while True:
            try:
                res = self.store.write_batch(
                    quarantined=bad, checkpoints=batch.checkpoints, source_watermark=name, rows=rows
                )
                break
            except StoreError as e:
                if self.stop_event.is_set():
                    raise
                logger.warning("source %s: store unavailable (%s); retrying in %.1fs, offsets not committed",
                               name, e, delay)  # fmt: skip
                time.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
        self.positions = new_pos
        self.filtered = new_filtered
        record_write(self.report, batch, bad, res, len(filtered))
        self._commit(list(new_pos))

    def _close(self) -> None:
        if self.consumer is None:
            return
        try:
            self._commit(list(self.positions))
            self.consumer.close(autocommit=False)
        except Exception as e:
            logger.warning("source %s: closing the consumer: %s", self.source.name, e)
        self.consumer = None
