"""Wrapper overhead: `fmnist-yolo train` against plain `yolo classify train`, identical arguments, alternating.

Each repetition runs four whole processes in alternating order and times each from start to exit
(interpreter start-up and imports included):

  stock        yolo classify train ARGS
  stock_test   yolo classify val model=<stock best.pt> split=test    (what fmnist-yolo adds: one test pass)
  ours_train   fmnist-yolo train ARGS fast=False evaluate_test=False   (the same work as `stock`: its loader)
  ours         fmnist-yolo train ARGS fast=False                       (train + test evaluation, the default)

and prints two medians of per-repetition ratios: ours_train/stock (the wrapper's own cost; target <= 1.05)
and ours/(stock + stock_test) (the same deliverable: a trained model and its test score).

    python benchmarks/bench_train.py [--reps 5] [--fraction 0.02] [--data datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(argv: list[str]) -> float:
    """Seconds from process start to exit; raises with its output if it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions (3 are too noisy here)")
    parser.add_argument("--fraction", type=float, default=0.02, help="of the 55k training images (default: 0.02)")
    parser.add_argument("--data", default="datasets/fashion-mnist", help="a prepared tree (make data)")
    parser.add_argument("--model", default="yolo11n-cls.yaml", help="the same for both (.pt needs the file offline)")
    args = parser.parse_args()
    data = Path(args.data).absolute()
    if not (data / "manifest.json").is_file():
        raise SystemExit(f"{data}: not a prepared tree (run `make data` first)")
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    common = [f"data={data}", f"model={args.model}", "epochs=1", "imgsz=28", f"fraction={args.fraction}",
              "device=cpu", "seed=0", "deterministic=True", f"project={work}", "exist_ok=True"]  # fmt: skip
    times: dict[str, list[float]] = {"stock": [], "stock_test": [], "ours_train": [], "ours": []}
    try:
        timed([str(BIN / "yolo"), "classify", "train", *common, "name=warmup"])  # page cache, .cache files, fonts
        for rep in range(args.reps):
            arms = {
                "stock": [str(BIN / "yolo"), "classify", "train", *common, f"name=stock{rep}"],
                "stock_test": [str(BIN / "yolo"), "classify", "val", f"model={work}/stock{rep}/weights/best.pt",
                               f"data={data}", "split=test", "imgsz=28", "device=cpu", f"project={work}",
                               f"name=stock_test{rep}"],
                "ours_train": [str(BIN / "fmnist-yolo"), "train", *common, f"name=ours_train{rep}",
                               "evaluate_test=False", "fast=False"],
                "ours": [str(BIN / "fmnist-yolo"), "train", *common, f"name=ours{rep}", "fast=False"],
            }  # fmt: skip
            order = ["stock", "stock_test", "ours_train", "ours"]
            if rep % 2:  # alternate who goes first; stock_test needs stock's weights
                order = ["ours", "ours_train", "stock", "stock_test"]
            for name in order:
                times[name].append(timed(arms[name]))
                print(f"rep {rep} {name:10s} {times[name][-1]:7.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    own = [o / s for o, s in zip(times["ours_train"], times["stock"])]
    deliverable = [o / (s + t) for o, s, t in zip(times["ours"], times["stock"], times["stock_test"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    for name, value in med.items():
        print(f"{name:10s} median {value:7.2f} s")
    print(
        f"ours_train / stock                  median {statistics.median(own):.3f}  "
        f"(per rep {[round(r, 3) for r in own]})  target <= 1.05"
    )
    print(
        f"ours / (stock + stock_test)         median {statistics.median(deliverable):.3f}  "
        f"(per rep {[round(r, 3) for r in deliverable]})"
    )
    print(json.dumps({"median_s": med, "ratio_own": statistics.median(own), "ratios_own": own,
                      "ratio_deliverable": statistics.median(deliverable), "fraction": args.fraction}))  # fmt: skip


if __name__ == "__main__":
    main()
