"""Full 70k conversion: `fmnist_yolo.prepare` against a naive single-threaded cv2.imwrite loop.

Runs both side by side in one session, alternating, and prints the median time ratio, the no-op
re-run against the naive loop, and the peak memory of each (largest process, from getrusage).
Targets (issue 2/6): ratio <= 0.35, no-op <= 0.05x naive, peak <= 400 MB.

    python benchmarks/bench_convert.py [--reps 3] [--source DIR] [--dir datasets|/dev/shm]

Small-file creation dominates both sides, so the storage matters: on a VM disk mounted with online
`discard`, deleting a 70k-file tree slows the next writes for minutes; --dir /dev/shm measures the
CPU side alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAIVE = r"""
import gzip, sys, time
from pathlib import Path
import cv2, numpy as np
src, out = Path(sys.argv[1]), Path(sys.argv[2])
names = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt", "7_sneaker",
         "8_bag", "9_ankle_boot"]
def idx(name, offset):
    return np.frombuffer(gzip.open(src / f"{name}.gz").read(), np.uint8, offset=offset)
t0 = time.perf_counter()
data = {"train": (idx("train-images-idx3-ubyte", 16).reshape(-1, 28, 28), idx("train-labels-idx1-ubyte", 8)),
        "test": (idx("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28), idx("t10k-labels-idx1-ubyte", 8))}
val = set(np.random.default_rng(0).permutation(60000)[:5000].tolist())  # not stratified: the naive way
for split, (images, labels) in data.items():
    for i, (image, label) in enumerate(zip(images, labels)):
        sub = "val" if split == "train" and i in val else split
        d = out / sub / names[label]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{split}_{i:05d}.png"), image)
import resource
peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(time.perf_counter() - t0, peak / 1024)
"""

OURS = r"""
import sys, time
from fmnist_yolo import prepare
t0 = time.perf_counter()
prepare(source=sys.argv[1], out=sys.argv[2], force=sys.argv[3] == "force", progress=False, link=False)
import resource
peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(time.perf_counter() - t0, peak / 1024)
"""


def timed(code: str, *args: str) -> tuple[float, float, float]:
    """Run `code` in a fresh interpreter; return (seconds it reports, peak RSS MB of its largest process, seconds of
    the whole process: interpreter start-up and imports included, as a user waits for it)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    whole = time.perf_counter() - t0
    seconds, peak = r.stdout.split()[-2:]
    return float(seconds), float(peak), whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--dir", default="datasets", help="where the trees are written (e.g. /dev/shm for tmpfs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=".bench-convert-", dir=Path(args.dir).absolute()))
    naive, ours, naive_mem, ours_mem, whole = [], [], [], [], {"naive": [], "ours": []}
    try:
        for rep in range(args.reps):
            for label in ("ours", "naive") if rep % 2 else ("naive", "ours"):
                out = work / f"{label}-{rep}"
                if label == "naive":
                    t, m, w = timed(NAIVE, args.source, str(out))
                    naive.append(t)
                    naive_mem.append(m)
                else:
                    t, m, w = timed(OURS, args.source, str(out), "force")
                    ours.append(t)
                    ours_mem.append(m)
                whole[label].append(w)
                print(f"rep {rep} {label:5s} {t:7.2f} s ({w:.2f} s whole process)", flush=True)
                if label == "naive" or rep < args.reps - 1:  # the last tree of ours serves the no-op run
                    shutil.rmtree(out)
                os.sync()  # neither side pays for the other's delayed writeback
        noop = [timed(OURS, args.source, str(work / f"ours-{args.reps - 1}"), "noforce")[0] for _ in range(3)]
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fmnist_yolo",
                "prepare",
                f"source={args.source}",
                f"out={work / f'ours-{args.reps - 1}'}",
            ],
            check=True,
            capture_output=True,
        )
        noop_process = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [o / n for o, n in zip(ours, naive)]
    whole_ratios = [o / n for o, n in zip(whole["ours"], whole["naive"])]
    peak = max(ours_mem)
    result = {
        "naive_s": statistics.median(naive),
        "ours_s": statistics.median(ours),
        "ratio_median": statistics.median(ratios),
        "ratios": [round(r, 3) for r in ratios],
        "whole_process_ratio_median": statistics.median(whole_ratios),
        "whole_process_ratios": [round(r, 3) for r in whole_ratios],
        "noop_s": statistics.median(noop),
        "noop_ratio": statistics.median(noop) / statistics.median(naive),
        "noop_whole_process_s": noop_process,
        "peak_rss_mb_ours": peak,
        "peak_rss_mb_naive": max(naive_mem),
    }
    print(f"\nnaive cv2.imwrite loop   median {result['naive_s']:.2f} s")
    print(f"fmnist_yolo.prepare      median {result['ours_s']:.2f} s")
    print(
        f"ratio ours/naive         median {result['ratio_median']:.3f}  (per pair {result['ratios']})  target <= 0.35"
    )
    print(
        f"whole processes          median {result['whole_process_ratio_median']:.3f}  "
        f"(per pair {result['whole_process_ratios']})  target <= 0.35"
    )
    print(
        f"no-op re-run             {result['noop_s']:.3f} s = {result['noop_ratio']:.4f} x naive  target <= 0.05"
        f"  (whole `fmnist-yolo prepare` process: {noop_process:.2f} s)"
    )
    print(f"peak RSS, largest process of ours: {peak:.0f} MB  target <= 400 MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
