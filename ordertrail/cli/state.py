"""What every command shares: resolved config and store, opened lazily and closed on exit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, find_config_path, load_config

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported by the commands that open one
    from ordertrail.store import Store


@dataclass
class AppState:
    config_path: str | None = None
    db_url: str | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    def config(self) -> Config:
        if self._config is None:
            path = find_config_path(self.config_path)
            if path is None:
                raise ConfigError(
                    "no ordertrail.toml here; pass --config PATH, set ORDERTRAIL_CONFIG, "
                    "or run 'ordertrail init'"
                )
            self._config = load_config(path)
        return self._config

    def maybe_config(self) -> Config | None:
        """The config when there is one (status works on a bare store too)."""
        if self.config_path or find_config_path(None):
            return self.config()
        return None

    def store(self) -> Store:
        if self._store is None:
            from ordertrail.store import Store
            from ordertrail.store.engine import resolve_url

            cfg = self.maybe_config()
            url = resolve_url(self.db_url, cfg.store_url if cfg else None)
            logging.getLogger(__name__).debug("store %s", url)
            self._store = Store(url)
            click.get_current_context().call_on_close(self._store.close)
            if cfg and cfg.pipeline.searchable:
                from ordertrail.report.search import ensure_attribute_indexes

                ensure_attribute_indexes(self._store, cfg.pipeline.searchable)
        return self._store

    def existing_store(self, command: str) -> Store:
        """The store, which must exist already: a command that only reads or removes (prune)
        must not leave a new empty store where a mistyped path points."""
        from ordertrail.store.engine import resolve_url, sqlite_file

        cfg = self.maybe_config()
        path = sqlite_file(resolve_url(self.db_url, cfg.store_url if cfg else None))
        if path is not None and not path.exists():
            raise ConfigError(
                f"{command}: no store at {path} (is the path right? 'ordertrail ingest' "
                "creates a store)",
                key="store.url",
            )
        return self.store()

    def config_dir(self) -> Path:
        cfg = self.config()
        return Path(cfg.path).parent if cfg.path else Path.cwd()
