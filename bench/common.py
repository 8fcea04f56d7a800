"""Helpers for benchmarks: timing a child process with its peak RSS, machine description."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
OUT = ROOT / "bench" / "out"


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    cpu_seconds: float = float("nan")  # user + system, the command and its children


def run_measured(cmd: list[str], **kw: object) -> Measured:
    """Run a command; wall time and the child's peak RSS (via wait4's rusage)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    out, err = p.communicate()
    dt = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.strip()[-2000:]}")
    # ru_maxrss is the max over all waited-for children so far; benchmarks run one command
    # per measurement in a fresh helper process (see measure_isolated) to keep it per command
    return Measured(dt, ru.ru_maxrss / 1024, p.returncode, out)


def measure_isolated(
    cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> Measured:
    """Measure ``cmd`` from a fresh python process so its peak RSS is its own."""
    import json
    import sys

    helper = (
        "import json,resource,subprocess,sys,time;"
        "t=time.perf_counter();p=subprocess.run(json.loads(sys.argv[1]),capture_output=True,text=True);"
        "d=time.perf_counter()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN);r=u.ru_maxrss/1024;"
        "print(json.dumps({'s':d,'rss':r,'cpu':u.ru_utime+u.ru_stime,'rc':p.returncode,"
        "'out':p.stdout[-4000:],'err':p.stderr[-4000:]}))"
    )
    p = subprocess.run(
        [sys.executable, "-c", helper, json.dumps(cmd)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    d = json.loads(p.stdout)
    if d["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({d['rc']}): {d['err']}")
    return Measured(d["s"], d["rss"], d["rc"], d["out"], d["cpu"])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()} {platform.release()}"
