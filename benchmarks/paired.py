"""Time two whole commands in turn (A B A B ...) and print each one's median wall seconds and peak memory, and the
ratio A/B pair by pair: a comparison that holds when the machine's speed drifts. Standard library only.

    python benchmarks/paired.py -n 5 --a "env PYTHONPATH=NEW bertcli eval ..." --b "env PYTHONPATH=OLD bertcli eval ..."

Each command runs once first, uncounted (files cached, bytecode compiled). Output is thrown away; the exit code of a
run that fails is printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import time


def run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one run of `command` (wait4's ru_maxrss, KiB on Linux: its largest
    process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"exit {code}: {shlex.join(command)}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="command A, split as a shell splits words (no shell runs it)")
    parser.add_argument("--b", required=True, help="command B")
    parser.add_argument("-n", type=int, default=5, help="counted pairs")
    args = parser.parse_args()
    a, b = shlex.split(args.a), shlex.split(args.b)
    run(a), run(b)  # warm-up
    pairs = [(run(a), run(b)) for _ in range(args.n)]
    for name, k in (("A", 0), ("B", 1)):
        walls, peaks = [p[k][0] for p in pairs], [p[k][1] for p in pairs]
        print(f"{name}: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), "
              f"peak memory median {statistics.median(peaks):.0f} MiB")  # fmt: skip
    ratios = [pa[0] / pb[0] for pa, pb in pairs]
    print(f"A/B wall: median {statistics.median(ratios):.3f}x (pairs {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
