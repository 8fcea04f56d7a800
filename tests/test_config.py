from __future__ import annotations

from pathlib import Path

import pytest

from ordertrail.errors import ConfigError
from ordertrail.schemas.config import load_config, parse_config
from ordertrail.schemas.durations import format_duration, parse_duration
from ordertrail.schemas.example import EXAMPLE_CONFIG
from ordertrail.simulation.pipeline import DEMO_CONFIG

MIN = 60_000_000


def test_example_and_demo_configs_parse(tmp_path: Path) -> None:
    for text in (EXAMPLE_CONFIG, DEMO_CONFIG):
        p = tmp_path / "c.toml"
        p.write_text(text)
        cfg = load_config(p)
        assert cfg.entry_hops == ("checkout",)
        assert cfg.hop("payment").within == {"confirmation": 5 * MIN, "fulfillment": 24 * 60 * MIN}
        assert cfg.hop("checkout").within == {"payment": 15 * MIN}
        assert cfg.closing_hops == ("cancelled",)
        assert cfg.ancestors("shipping") == {"checkout", "payment", "fulfillment"}
        assert cfg.descendants("payment") == {"confirmation", "fulfillment", "shipping"}


@pytest.mark.parametrize(
    ("text", "durations"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("2d", 172800), ("1h30m", 5400), (45, 45)],
)
def test_durations(text: str | int, durations: int) -> None:
    assert parse_duration(text) == durations * 1_000_000


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "1x", "-3m", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_format_duration() -> None:
    assert format_duration((3 * 86400 + 4 * 3600) * 1_000_000) == "3d 4h"
    assert format_duration(15 * MIN) == "15m"


def _hops(*extra: str) -> str:
    base = """
[[hops]]
name = "a"
next = ["b"]
within = "5m"
[[hops]]
name = "b"
"""
    return base + "\n".join(extra)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_hops() + '\n[pipeline]\nnme = "x"\n', "pipeline.nme: unknown key (did you mean 'name'?)"),
        (
            '[[hops]]\nname = "a"\nnext = ["bb"]\nwithin = "1m"\n[[hops]]\nname = "b"\n',
            "hops[0] (a).next: unknown hop 'bb' (did you mean 'b'?)",
        ),
        (
            '[[hops]]\nname = "a"\nnext = ["b"]\n[[hops]]\nname = "b"\n',
            "hops[0] (a).within: required when next is set",
        ),
        (
            '[[hops]]\nname = "a"\nnext = ["b"]\nwithin = "soon"\n[[hops]]\nname = "b"\n',
            "hops[0] (a).within: not a duration: 'soon'",
        ),
        (
            '[[hops]]\nname = "s"\nnext = ["a"]\nwithin = "1m"\n'
            '[[hops]]\nname = "a"\nnext = ["b"]\nwithin = "1m"\n'
            '[[hops]]\nname = "b"\nnext = ["a"]\nwithin = "1m"\n',
            "cycle in next: a -> b -> a",
        ),
        (
            _hops(
                '[[sources]]\nname = "x"\nkind = "file"\npath = "f"\nhop = "a"\ntimestamp = "t"\n'
            ),
            "sources[0] (x).order_id: required",
        ),
        (_hops('[[sources]]\nname = "x"\nkind = "ftp"\n'), "sources[0] (x).kind: must be one of"),
        (
            _hops(
                '[[sources]]\nname = "x"\nkind = "file"\npath = "f"\nhop = "zz"\n'
                'order_id = "o"\ntimestamp = "t"\n'
            ),
            "sources[0] (x).hop: unknown hop 'zz'",
        ),
        (
            _hops('[[checks]]\nfield = "amount"\nhops = ["a"]\n'),
            "checks[0].hops: needs at least two",
        ),
        (
            '[[hops]]\nname = "a"\npromises = ["b"]\n[[hops]]\nname = "b"\n',
            "hops[0] (a).promise_within: required when promises is set",
        ),
        ("", "hops: at least one [[hops]] entry is required"),
        (
            _hops('[store]\nretention = "9d23h59m"\n[pipeline]\nlookback = "10d"\n'),
            "store.retention: must be at least the pipeline's lookback (10d), not 9d23h59m",
        ),
        (_hops('[engine]\nmemory = "1MB"\n'), "engine.memory: must be at least 64MB"),
        (_hops('[engine]\nmemory = "0GB"\n'), "engine.memory: must be at least 64MB"),
        (_hops('[engine]\nmemory = "60MiB"\n'), "engine.memory: must be at least 64MB"),
        (_hops('[engine]\nmemory = "20000000TB"\n'), "engine.memory: must be at most 1000000TB"),
        (_hops('[engine]\nmemory = "4 G"\n'), "engine.memory: must be a size such as"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ")
    assert message in str(e.value)
    assert e.value.exit_code == 2


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[[hops]\nname=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_relative_sqlite_url_is_relative_to_config(tmp_path: Path) -> None:
    p = tmp_path / "ordertrail.toml"
    p.write_text('[store]\nurl = "sqlite:///x.db"\n' + _hops())
    assert load_config(p).store_url == f"sqlite:///{tmp_path / 'x.db'}"


def test_attributes_table_form() -> None:
    cfg = parse_config(
        {
            "hops": [{"name": "a"}],
            "sources": [
                {
                    "name": "s",
                    "kind": "file",
                    "path": "p",
                    "hop": "a",
                    "order_id": "o",
                    "timestamp": "t",
                    "attributes": {"items": "items.count"},
                }
            ],
        }
    )
    assert {k: a.path for k, a in cfg.sources[0].attributes.items()} == {"items": "items.count"}


@pytest.mark.parametrize("size", ["64MB", "61.1MiB", "0.5GB", "4GB", "1TiB"])
def test_engine_memory_from_64mb(size: str) -> None:
    import tomllib

    assert (
        parse_config(tomllib.loads(_hops(f'[engine]\nmemory = "{size}"\n'))).engine.memory == size
    )
