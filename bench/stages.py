"""Where a reconcile run's time goes: wall and CPU seconds (user and system, this process and its
reader processes, from ``getrusage``) per stage of the run, the stages its progress bar shows.

    python -m bench.stages -- --config bench/data/reconcile-10000000/mem1g.toml \\
        --db sqlite:///$PWD/bench/data/reconcile-10000000/store.db \\
        reconcile --as-of 1769817600 --format json --output /tmp/out.json

Everything after ``--`` is an ``ordertrail`` command line; the table goes to stderr when the
command ends. A reader process's CPU is counted when it is reaped, so it lands in the stage
that ends it (reading the window)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any


def _cpu() -> tuple[float, float]:
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


class Stages:
    """Marks: (stage, wall, user, system) whenever the stage changes."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float, float]] = []

    def mark(self, name: str) -> None:
        if not self.marks or self.marks[-1][0] != name:
            self.marks.append((name, time.perf_counter(), *_cpu()))

    def wrap(self, reconcile: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, progress: Callable[[str, int, int], None] | None = None,
                **kw: Any) -> Any:  # fmt: skip
            def on_progress(stage: str, done: int, total: int) -> None:
                self.mark("parts" if stage.startswith("part ") else stage)
                if progress is not None:
                    progress(stage, done, total)

            self.mark("starting")
            try:
                return reconcile(*args, progress=on_progress, **kw)
            finally:
                self.mark("after the run")

        return run

    def table(self) -> str:
        lines = [f"{'stage':32s} {'wall s':>8s} {'user s':>8s} {'sys s':>8s}"]
        for (name, t, u, s), (_, t2, u2, s2) in zip(self.marks, self.marks[1:], strict=False):
            lines.append(f"{name:32s} {t2 - t:8.2f} {u2 - u:8.2f} {s2 - s:8.2f}")
        return "\n".join(lines)


def main() -> None:
    if "--" not in sys.argv:
        raise SystemExit("usage: python -m bench.stages -- ORDERTRAIL ARGS…")
    args = sys.argv[sys.argv.index("--") + 1 :]
    import ordertrail.reconcile as engine
    from ordertrail.cli.main import main as cli

    stages = Stages()
    engine.reconcile = stages.wrap(engine.reconcile)  # the CLI imports it when it runs
    sys.argv = ["ordertrail", *args]
    try:
        cli()
    finally:
        stages.mark("exit")
        print(stages.table(), file=sys.stderr)


if __name__ == "__main__":
    main()
