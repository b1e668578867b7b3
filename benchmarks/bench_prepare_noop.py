"""`fmnist-yolo prepare` with nothing to do, as a whole process: median wall time of N fresh interpreters.

    python benchmarks/bench_prepare_noop.py [--reps 11] [--out datasets/fashion-mnist]

Target (issue 33): <= 0.25 s. One untimed run first prepares the tree if needed and warms the file cache; every
timed run must say "is up to date". Also prints a bare interpreter's start (`python -c pass`), the floor under any
command, and which heavy modules the no-op imports (none expected: tests/test_prepare.py checks the same).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # run from the checkout, so that its fmnist_yolo is the one timed
HEAVY = ("cv2", "numpy", "tqdm", "pandas", "torch", "ultralytics")
IMPORTED = (
    "import sys\nfrom fmnist_yolo.cli import main\ncode = main(sys.argv[1:])\n"
    f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def wall(argv: list[str]) -> tuple[float, str]:
    """Seconds a fresh process of `argv` takes, from outside; and its stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return seconds, r.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--out", default="datasets/fashion-mnist", help="the prepared tree (prepared first if not)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "fmnist_yolo", "prepare", f"out={args.out}"]
    wall(command)  # prepares when needed; warms the file cache
    times, floor = [], []
    for _ in range(args.reps):
        seconds, err = wall(command)
        if "is up to date" not in err:
            sys.exit(f"not a no-op: {err.strip()}")
        times.append(seconds)
        floor.append(wall([sys.executable, "-c", "pass"])[0])
    probe = subprocess.run(
        [sys.executable, "-c", IMPORTED, "prepare", f"out={args.out}"], cwd=ROOT, capture_output=True, text=True
    )
    result = {
        "noop_prepare_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "python_start_s": round(statistics.median(floor), 3),
        "heavy_modules_imported": probe.stdout.strip(),
        "reps": args.reps,
    }
    print(
        f"no-op `fmnist-yolo prepare`: median {result['noop_prepare_s']:.3f} s of {args.reps} "
        f"({result['min_s']:.3f}-{result['max_s']:.3f} s)  target <= 0.25 s\n"
        f"bare `python -c pass`: median {result['python_start_s']:.3f} s\n"
        f"heavy modules imported: {result['heavy_modules_imported']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
