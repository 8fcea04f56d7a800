"""A reconciled demo shop store for the web view's tests (built once per test module)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ordertrail.schemas.config import Config, load_config
from ordertrail.schemas.event import datetime_to_us

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
AS_OF_US = datetime_to_us(AS_OF)


@dataclass
class Shop:
    root: Path
    url: str
    config: Config
    result: Any  # ShopResult: what was injected
    run: Any  # the RunResult of the reconcile at AS_OF

    def fault(self, name: str) -> tuple[Any, ...]:
        """The first expected finding key of an injected fault: (order, kind, hop, from, objs)."""
        return next(k for k, v in sorted(self.result.expected.items()) if v == name)


def build_shop(root: Path, url: str | None = None, orders: int = 800) -> Shop:
    from ordertrail.collectors import file_sources, ingest_file_source
    from ordertrail.reconcile import reconcile
    from ordertrail.simulation.shop import ShopSimulation
    from ordertrail.store import Store

    res = ShopSimulation(orders=orders, seed=7).run(root)
    cfg = load_config(res.config_path)
    url = url or f"sqlite:///{root / 'ordertrail.db'}"
    with Store(url) as store:
        if cfg.pipeline.searchable:
            from ordertrail.report.search import ensure_attribute_indexes

            ensure_attribute_indexes(store, cfg.pipeline.searchable)
        for s in file_sources(cfg):
            ingest_file_source(store, cfg, s)
        run = reconcile(store, cfg, as_of=AS_OF_US)
    return Shop(root, url, cfg, res, run)
