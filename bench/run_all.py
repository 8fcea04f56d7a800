"""Run every benchmark with the sizes the README reports (takes about 20 minutes here).

python -m bench.run_all      (or: make bench)
"""

from __future__ import annotations

import os
import subprocess
import sys

from bench.common import OUT, ROOT


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not env.get("ORDERTRAIL_TEST_PG_URL"):
        env["ORDERTRAIL_TEST_PG_URL"] = subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), "start"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    runs = [
        ("ingest", ["--events", "1000000"]),
        ("reconcile", ["--orders", "100000", "1000000", "3000000"]),
        ("kafka", ["--events", "1000000"]),
        ("lookup", ["--orders", "2100000"]),
        ("serve", ["--orders", "1000000"]),
    ]
    for name, args in runs:
        print(f"== bench.{name} {' '.join(args)}", flush=True)
        out = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], env=env, cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
        text = out.stdout + (out.stderr[-2000:] if out.returncode else "")
        (OUT / f"{name}.txt").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
