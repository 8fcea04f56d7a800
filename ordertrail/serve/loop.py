"""The background work of ``ordertrail serve``: reconcile every ``--every`` (or when an admin
asks), and retry pending notifications in between.

Each reconcile runs in a child process of its own (spawned, not forked): the run's memory (about
1 GB for a million orders) is given back when it ends, and its work never holds up the pages. The
child records the run and tells the ``[[notify]]`` targets, exactly as ``ordertrail reconcile``
does. Between runs this thread retries what is pending every :data:`RETRY_EVERY` seconds, so a
receiver that was down gets its notifications once it is back, without waiting for a run.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any

from ordertrail.schemas.config import Config
from ordertrail.serve.notify import deliver_pending
from ordertrail.store import Store

logger = logging.getLogger(__name__)

RETRY_EVERY = 30.0  # s between two delivery rounds for pending notifications


def reconcile_and_notify(url: str, config: Config, as_of: int | None) -> None:
    """One scheduled run (in the child process): reconcile, record, notify."""
    import sys

    from ordertrail.reconcile import reconcile
    from ordertrail.serve.notify import notify_after_run

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    with Store(url) as store:
        result = reconcile(store, config, as_of=as_of)
        notify_after_run(store, config, result)


@dataclass
class RunState:
    """What the status page says about scheduled runs."""

    running: bool = False
    started: float | None = None  # wall-clock s
    finished: float | None = None
    ok: bool | None = None
    error: str = ""


class Scheduler:
    """Runs reconcile on a schedule and delivers pending notifications, in one thread."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        every: float | None = None,  # s; None: only when triggered
        as_of: int | None = None,
        metrics: Any = None,  # ServeMetrics: counters for runs and notification attempts
        retry_every: float = RETRY_EVERY,
    ):
        self.store = store
        self.config = config
        self.every = every
        self.as_of = as_of
        self.metrics = metrics
        self.retry_every = retry_every
        self.state = RunState()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._requested = False
        self._thread: threading.Thread | None = None
        self._child: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ordertrail-serve", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        child = self._child
        if child is not None and child.is_alive():
            child.terminate()  # a run is one transaction: nothing half-written stays
        if self._thread is not None:
            self._thread.join(timeout)

    def trigger(self) -> bool:
        """Ask for a run now; False when one is running already."""
        if self.state.running:
            return False
        self._requested = True
        self._wake.set()
        return True

    def _loop(self) -> None:
        inf = float("inf")
        next_run = time.monotonic() if self.every else inf
        next_delivery = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if self._requested or now >= next_run:
                self._requested = False
                started = time.monotonic()
                self._run_once()
                next_run = started + self.every if self.every else inf
                next_delivery = time.monotonic() + self.retry_every
                continue
            if self.config.notify and now >= next_delivery:
                self._deliver()
                next_delivery = time.monotonic() + self.retry_every
            wait = min(next_run, next_delivery if self.config.notify else inf) - time.monotonic()
            self._wake.wait(max(0.0, min(wait, 3600.0)))
            self._wake.clear()

    def _run_once(self) -> None:
        st = self.state
        st.running, st.started, st.error = True, time.time(), ""
        try:
            ctx = multiprocessing.get_context("spawn")
            self._child = ctx.Process(
                target=reconcile_and_notify,
                args=(self.store.url, self.config, self.as_of),
                name="ordertrail-reconcile",
                daemon=True,
            )
            self._child.start()
            while self._child.is_alive() and not self._stop.is_set():
                self._child.join(0.5)
            code = self._child.exitcode
            st.ok = code == 0
            if not st.ok and not self._stop.is_set():
                st.error = f"the reconcile process exited with {code}"
                logger.error("scheduled reconcile failed: %s (see the log above)", st.error)
        except Exception as e:  # the server goes on; the next run may work
            st.ok, st.error = False, f"{type(e).__name__}: {e}"
            logger.exception("scheduled reconcile could not start")
        finally:
            st.running, st.finished, self._child = False, time.time(), None
        if self.metrics is not None:
            self.metrics.scheduled_runs.labels("ok" if st.ok else "failed").inc()

    def _deliver(self) -> None:
        try:
            deliver_pending(
                self.store,
                self.config,
                on_attempt=self.metrics.on_attempt if self.metrics is not None else None,
            )
        except Exception:
            logger.exception("notify: delivery round failed")
