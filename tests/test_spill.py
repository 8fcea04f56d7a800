"""DuckDB's spill directory: a run that is killed leaves it behind (gigabytes on a large
window); the next run on the same host removes it, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from ordertrail.reconcile import columnar
from ordertrail.reconcile.columnar import SPILL_PREFIX, WindowDB, sweep_spill_dirs
from ordertrail.reconcile.plan import compile_plan
from ordertrail.schemas.config import parse_config

CONFIG = """
[pipeline]
name = "p"
[[hops]]
name = "a"
next = ["b"]
within = "1h"
[[hops]]
name = "b"
"""

VICTIM = """
import sys, time
from ordertrail.reconcile.columnar import WindowDB
from ordertrail.reconcile.plan import compile_plan
from ordertrail.schemas.config import parse_config
import tomllib
db = WindowDB(compile_plan(parse_config(tomllib.loads(sys.argv[1]))))
open(db._tmp + "/duckdb_temp_storage-0.tmp", "wb").write(b"x" * 100_000)
print(db._tmp, flush=True)
time.sleep(600)
"""


def test_a_killed_runs_spill_directory_is_removed_by_the_next_run(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen(
        [sys.executable, "-c", VICTIM, CONFIG], stdout=subprocess.PIPE, env=env, text=True
    )
    assert p.stdout is not None
    spill = Path(p.stdout.readline().strip())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert spill.parent == tmp_path and spill.name.startswith(SPILL_PREFIX)
    assert (spill / "duckdb_temp_storage-0.tmp").exists()  # left behind by the kill
    # a live run's directory on this host stays: this process's own
    mine = tmp_path / f"{SPILL_PREFIX}{columnar._host()}-{os.getpid()}-live"
    mine.mkdir()
    assert sweep_spill_dirs(str(tmp_path)) == [str(spill)]
    assert not spill.exists() and mine.exists()


def test_the_sweep_leaves_what_is_not_a_dead_local_runs_directory(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = p.pid  # a process that has ended (its id may come back, rarely, within the test)
    host = columnar._host()
    keep = [
        tmp_path / f"{SPILL_PREFIX}other_host-{dead}-abc",  # another host's
        tmp_path / f"{SPILL_PREFIX}{host}-{os.getpid()}-abc",  # a live process's
        tmp_path / f"{SPILL_PREFIX}{host}-abc",  # not named like ours (an older version's)
        tmp_path / f"{SPILL_PREFIX}{host}x-{dead}-abc",  # a host whose name only starts so
        tmp_path / "unrelated",
    ]
    for d in keep:
        d.mkdir()
        (d / "f").write_text("data")
    a_file = tmp_path / f"{SPILL_PREFIX}{host}-{dead}-file"
    a_file.write_text("not a directory")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "f").write_text("data")
    link = tmp_path / f"{SPILL_PREFIX}{host}-{dead}-link"
    link.symlink_to(target)
    gone = tmp_path / f"{SPILL_PREFIX}{host}-{dead}-xyz"
    gone.mkdir()
    (gone / "spill.tmp").write_bytes(b"x")
    assert sweep_spill_dirs(str(tmp_path)) == [str(gone)]
    assert all((d / "f").read_text() == "data" for d in [*keep, target])
    assert a_file.read_text() == "not a directory" and link.is_symlink()


def test_a_window_spills_into_a_directory_named_after_its_host_and_process() -> None:
    plan = compile_plan(parse_config(tomllib.loads(CONFIG)))
    with WindowDB(plan, memory="100MB") as db:
        name = Path(db._tmp).name
        assert name.startswith(f"{SPILL_PREFIX}{columnar._host()}-{os.getpid()}-")
        spill = db._tmp
    assert not Path(spill).exists()  # a clean close removes it
