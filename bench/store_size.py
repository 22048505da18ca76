#!/usr/bin/env python3
"""How big `.wanx/wanx.db` is after building a large project (see BENCHMARKS.md, "Store growth"):
builds bench.py's N-task project through the in-process emulator, then prints the database's size
(after a checkpoint and VACUUM) and the bytes each table holds, per task. Prints figures; asserts nothing.

    python3 bench/store_size.py --bin target/release/wanx [--tasks 10000]
"""

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (make_project, wanx_env: the same project as the no-op benchmark)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tasks", type=int, default=10000)
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    with tempfile.TemporaryDirectory(prefix="wanx-store-") as tmp:
        root = os.path.join(tmp, "project")
        bench.make_project(root, args.tasks)
        start = time.perf_counter()
        subprocess.run([binary, "build", "--emulate", "-q"], cwd=root, env=bench.wanx_env(), check=True)
        took = time.perf_counter() - start
        db = os.path.join(root, ".wanx", "wanx.db")
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        size = os.path.getsize(db)
        print(f"{args.tasks} tasks built in {took:.1f} s; .wanx/wanx.db {size / 1e6:.2f} MB "
              f"({size / args.tasks:.0f} bytes a task)")
        try:
            rows = conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        except sqlite3.OperationalError:
            rows = []
        for name, bytes_ in rows:
            print(f"  {name:<32} {bytes_ / 1e6:8.2f} MB  {bytes_ / args.tasks:6.0f} bytes a task")


if __name__ == "__main__":
    main()
