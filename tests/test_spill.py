"""DuckDB's spill directory: a run that is killed leaves it behind (gigabytes on a large
window); the next run on the same host removes it, and nothing else. A run holds a ``flock``
in its directory while it uses it: the kernel lets go when the process dies, in whatever PID
namespace it ran, so a lock that can be taken is a dead run's."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ordertrail.reconcile import columnar
from ordertrail.reconcile.columnar import LOCK_NAME, SPILL_PREFIX, WindowDB, sweep_spill_dirs
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


def _start_victim(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen(
        [sys.executable, "-c", VICTIM, CONFIG], stdout=subprocess.PIPE, env=env, text=True
    )
    assert p.stdout is not None
    return p, Path(p.stdout.readline().strip())


def test_a_killed_runs_spill_directory_is_removed_by_the_next_run(tmp_path: Path) -> None:
    live, live_dir = _start_victim(tmp_path)
    p, spill = _start_victim(tmp_path)
    try:
        assert sweep_spill_dirs(str(tmp_path)) == []  # both alive: both kept
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert spill.parent == tmp_path and spill.name.startswith(SPILL_PREFIX)
        assert (spill / "duckdb_temp_storage-0.tmp").exists()  # left behind by the kill
        assert sweep_spill_dirs(str(tmp_path)) == [str(spill)]
        assert not spill.exists()
        assert (live_dir / "duckdb_temp_storage-0.tmp").exists()  # the live run's stays
    finally:
        live.kill()
        live.wait()


def _dead_runs_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir()
    (d / LOCK_NAME).write_text("")
    (d / "spill.tmp").write_bytes(b"x")
    return d


def test_the_sweep_leaves_what_is_not_a_dead_local_runs_directory(tmp_path: Path) -> None:
    host = columnar._host()
    keep = [
        _dead_runs_dir(tmp_path, f"{SPILL_PREFIX}other_host-1-abc"),  # another host's
        tmp_path / f"{SPILL_PREFIX}{host}-123-nolock",  # no lock file: an older version's
        tmp_path / "unrelated",
    ]
    keep[1].mkdir()
    keep[2].mkdir()
    # held by a live process whose id this process cannot see (another PID namespace): kept,
    # whatever its name says
    held = _dead_runs_dir(tmp_path, f"{SPILL_PREFIX}{host}-99999999999-held")
    fd = os.open(held / LOCK_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    a_file = tmp_path / f"{SPILL_PREFIX}{host}-7-file"
    a_file.write_text("not a directory")
    target = _dead_runs_dir(tmp_path, "elsewhere")
    link = tmp_path / f"{SPILL_PREFIX}{host}-7-link"
    link.symlink_to(target)
    lock_link = tmp_path / f"{SPILL_PREFIX}{host}-7-locklink"
    lock_link.mkdir()
    (lock_link / LOCK_NAME).symlink_to(target / LOCK_NAME)
    gone = _dead_runs_dir(tmp_path, f"{SPILL_PREFIX}{host}-99999999999999999999-xyz")
    try:
        assert sweep_spill_dirs(str(tmp_path)) == [str(gone)]
    finally:
        os.close(fd)
    assert all(d.exists() for d in [*keep, held, target, lock_link])
    assert (held / "spill.tmp").exists() and (target / "spill.tmp").exists()
    assert a_file.read_text() == "not a directory" and link.is_symlink()


def test_a_window_spills_into_a_locked_directory_named_after_its_host_and_process() -> None:
    plan = compile_plan(parse_config(tomllib.loads(CONFIG)))
    with WindowDB(plan, memory="100MB") as db:
        spill = Path(db._tmp)
        assert spill.name.startswith(f"{SPILL_PREFIX}{columnar._host()}-{os.getpid()}-")
        assert (spill / LOCK_NAME).exists()
        assert sweep_spill_dirs(str(spill.parent)) == []  # this run's own: kept
        assert spill.exists()
    assert not spill.exists()  # a clean close removes it


@pytest.mark.parametrize("names", [("web-1", "web_1"), ("a b", "a_b"), ("", "_")])
def test_hosts_whose_names_sanitise_alike_keep_apart(
    monkeypatch: pytest.MonkeyPatch, names: tuple[str, str]
) -> None:
    import socket

    got = []
    for name in names:
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        got.append(columnar._host())
    assert got[0] != got[1] and all("-" not in g and "/" not in g and g for g in got)
