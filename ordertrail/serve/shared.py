"""What every order page of a big store needs from the whole window, computed once and shared.

A trail is judged by the engine's rules over one order, but two of its inputs are about the
whole window: the latest event per hop, and — for an overdue edge — whether the pipeline moved
on past the order (vanished) or not (stalled), which reads the edge's population. On a store of a
million orders each takes tens of seconds; ``trace`` pays that once per command, a server cannot
per page. :class:`SharedWindow` keeps both, computed for the window ending at the time they were
computed, refreshed in the background every ``refresh`` seconds while the older value is served
(with a fixed ``--as-of`` they are exact). It is warmed when the server starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ordertrail.reconcile.backend import ProbeProgress, SqlBackend
from ordertrail.reconcile.plan import Plan, compile_plan
from ordertrail.schemas.config import Config
from ordertrail.store import Store
from ordertrail.store import window as w

logger = logging.getLogger(__name__)


class _Entry:
    """One shared value: computed on first use (others wait for it), then refreshed in the
    background when older than ``refresh`` while the old value is served."""

    def __init__(self, compute: Callable[[], Any], refresh: float):
        self.compute = compute
        self.refresh = refresh
        self.value: Any = None
        self.at = 0.0
        self.lock = threading.Lock()
        self.refreshing = False

    def get(self) -> Any:
        if self.value is None:
            with self.lock:
                if self.value is None:
                    self._fill()
            return self.value
        if time.monotonic() - self.at > self.refresh and not self.refreshing:
            self.refreshing = True
            threading.Thread(target=self._refresh, daemon=True, name="ordertrail-shared").start()
        return self.value

    def _fill(self) -> None:
        value = self.compute()
        self.value, self.at = value, time.monotonic()

    def _refresh(self) -> None:
        try:
            with self.lock:
                self._fill()
        except Exception:
            logger.exception("refreshing a shared window value failed; the old one is kept")
        finally:
            self.refreshing = False


class SharedWindow:
    """The :class:`ordertrail.report.trace.Shared` of a server."""

    def __init__(
        self, store: Store, config: Config, clock: Callable[[], int], refresh: float = 300.0
    ):
        self.store = store
        self.config = config
        self.clock = clock
        self.refresh = refresh
        self._entries: dict[Any, _Entry] = {}
        self._lock = threading.Lock()
        self.warming = False

    def _entry(self, key: Any, compute: Callable[[], Any]) -> _Entry:
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                e = self._entries[key] = _Entry(compute, self.refresh)
            return e

    def _window(self) -> tuple[int, int]:
        hi = self.clock()
        return hi - self.config.pipeline.lookback, hi

    def last(self, plan: Plan, lo: int, hi: int) -> dict[str, float | None]:
        def compute() -> dict[str, float | None]:
            lo_, hi_ = self._window()
            with self.store.engine.connect() as conn:
                got = w.last_activity(conn, plan.names, lo_, hi_)
            return {h: (float(got[h]) if h in got else None) for h in plan.names}

        return dict(self._entry("last", compute).get())

    def progress(self, backend: SqlBackend, plan: Plan, lo: int, hi: int) -> Any:
        return _SharedProgress(self, backend, plan)

    def edge(self, backend: SqlBackend, plan: Plan, req_index: int) -> Any:
        """The populations of one edge (ProbeProgress over the server's window), shared."""

        def compute() -> Any:
            lo_, hi_ = self._window()
            return ProbeProgress(backend, plan, lo_, hi_)(req_index)

        return self._entry(("edge", req_index), compute).get()

    def warm(self) -> threading.Thread:
        """Compute everything once, in the background (the server answers meanwhile)."""

        def run() -> None:
            t0 = time.perf_counter()
            self.warming = True
            try:
                plan = compile_plan(self.config)
                backend = SqlBackend(self.store)
                lo, hi = self._window()
                self.last(plan, lo, hi)
                for i in range(len(plan.requirements)):
                    self.edge(backend, plan, i)
            except Exception:
                logger.exception("warming the shared window failed; pages compute it on demand")
            else:
                logger.info("shared window ready in %.1fs", time.perf_counter() - t0)
            finally:
                self.warming = False

        self.warming = True
        th = threading.Thread(target=run, daemon=True, name="ordertrail-warm")
        th.start()
        return th


class _SharedProgress:
    """The engine's progress provider, answered from :class:`SharedWindow`."""

    def __init__(self, shared: SharedWindow, backend: SqlBackend, plan: Plan):
        self.shared = shared
        self.backend = backend
        self.plan = plan

    def __call__(self, req_index: int) -> Any:
        return self.shared.edge(self.backend, self.plan, req_index)
