"""The fast data path (fast=True) against Ultralytics' stock loader: epoch time and accuracy, side by side.

    python benchmarks/bench_fast.py epoch    [--reps 2]      one full epoch each, alternating
    python benchmarks/bench_fast.py epoch --planned 100 --args warmup_epochs=0   the epoch `make train` repeats
    python benchmarks/bench_fast.py accuracy [--epochs 10]   N epochs each from scratch, then test top-1

Both arms are `fmnist_yolo.train` with identical arguments (yolo11n-cls.yaml, imgsz 28, the full 55k train
split, val 5k) and differ only in fast=True; bench_train.py shows the wrapper itself costs the same as
`yolo classify train`. Epoch time is Ultralytics' own `time` column of results.csv (training plus that epoch's
validation). Accuracy: best.pt chosen on val, evaluated once on test (the 10k official test images).
Targets: epoch time ratio <= 0.25 (issue 19; 0.3 in issue 8); 10-epoch test top-1 within 0.3 points of stock
(issue 14). `--fast-args amp=bf16` adds train arguments to the fast arm; `--arms fast` runs one arm alone (runs
are deterministic: a stock arm measured earlier on the same code stands). `--planned N` plans each run for N epochs
and stops it after the first, so that `optimizer=auto` picks what an N-epoch run trains with (MuSGD at 100: a 1-epoch
run's AdamW step is cheaper); `--args` adds train arguments to both arms (`warmup_epochs=0`: the steady epoch's
steps, not warm-up's smaller ones).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

RUN = r"""
import json, sys
import fmnist_yolo
kw = json.loads(sys.argv[1])
stop = kw.pop("stop_after", None)
def stop_after(trainer):
    trainer.stop = trainer.stop or trainer.epoch + 1 >= stop
run = fmnist_yolo.train(**kw, callbacks={"on_fit_epoch_end": stop_after} if stop else None)
h = run.history
print("RESULT", json.dumps({"epoch_s": h["time"].diff().fillna(h["time"]).tolist(), "val_top1": h["val_top1"].tolist(),
      "best_val": float(h["val_top1"].max()), "test_top1": run.test.top1 if run.test else None,
      "batch": run.provenance["args"].get("batch"), "device": run.provenance["device"],
      "wall_s": run.provenance["wall_time_s"]}))
"""


def one(kw: dict) -> dict:
    """Train in a fresh interpreter; return its RESULT line and the whole-process seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RUN, json.dumps(kw)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed: {kw}\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return {**result, "process_s": time.perf_counter() - t0}


def key_values(words: list[str]) -> dict:
    """KEY=VALUE words as train arguments, each value read as YAML (as the CLI reads it)."""
    return {k: yaml.safe_load(v) for k, v in (w.split("=", 1) for w in words)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["epoch", "accuracy"])
    parser.add_argument("--reps", type=int, default=2, help="epoch mode: alternating pairs (default: 2)")
    parser.add_argument("--epochs", type=int, default=10, help="accuracy mode: epochs per arm (default: 10)")
    parser.add_argument("--data", default="datasets/fashion-mnist")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fast-args", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra train arguments of the fast arm, e.g. amp=bf16")  # fmt: skip
    parser.add_argument("--planned", type=int, default=1, metavar="N",
                        help="epoch mode: plan N epochs (LR schedule, optimizer=auto), stop after one")  # fmt: skip
    parser.add_argument("--args", nargs="*", default=[], metavar="KEY=VALUE", help="train arguments of both arms")
    parser.add_argument("--arms", default="fast,stock", help="accuracy mode: which arms (default: fast,stock)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fast-"))
    fast_args = key_values(args.fast_args)
    common = {"data": str(Path(args.data).absolute()), "model": "yolo11n-cls.yaml", "imgsz": 28, "seed": 0,
              "device": args.device, "plots": False, "project": str(work), **key_values(args.args)}  # fmt: skip
    rows = []
    if args.mode == "epoch":
        for rep in range(args.reps):
            for fast in (False, True) if rep % 2 == 0 else (True, False):
                extra = fast_args if fast else {}
                planned = {"epochs": args.planned, "stop_after": 1} if args.planned > 1 else {"epochs": 1}
                r = one({**common, **extra, **planned, "fast": fast, "evaluate_test": False, "name": f"e{rep}{fast}"})
                rows.append(
                    {
                        "rep": rep,
                        "loader": "fast" if fast else "stock",
                        "batch": r["batch"],
                        "epoch_s": r["epoch_s"][0],
                        "process_s": r["process_s"],
                        "val_top1": r["val_top1"][0],
                    }
                )
                print(rows[-1], flush=True)
        table = pd.DataFrame(rows)
        pairs = table.pivot(index="rep", columns="loader", values="epoch_s")
        ratios = (pairs["fast"] / pairs["stock"]).tolist()
        print(table.to_string(index=False))
        print(
            f"\nepoch time fast/stock: median {statistics.median(ratios):.3f} (per pair "
            f"{[round(x, 3) for x in ratios]})  target <= 0.25"
        )
        print(
            f"images/s (55,000 per epoch, incl. its validation): stock {55000 / pairs['stock'].median():.0f}, "
            f"fast {55000 / pairs['fast'].median():.0f}"
        )
        print(json.dumps({"ratio": statistics.median(ratios), "ratios": ratios, "rows": rows}))
    else:
        for fast in [arm == "fast" for arm in args.arms.split(",")]:
            extra = fast_args if fast else {}
            r = one({**common, **extra, "epochs": args.epochs, "fast": fast, "name": f"acc{fast}"})
            rows.append(
                {
                    "loader": "fast" if fast else "stock",
                    "batch": r["batch"],
                    "epochs": args.epochs,
                    "best_val_top1": r["best_val"],
                    "test_top1": r["test_top1"],
                    "train_s": r["wall_s"],
                    "val_top1_by_epoch": [round(v, 4) for v in r["val_top1"]],
                }
            )
            print(rows[-1], flush=True)
        table = pd.DataFrame(rows).set_index("loader")
        print(table.drop(columns="val_top1_by_epoch").to_string())
        gap = None
        if {"fast", "stock"} <= set(table.index):
            gap = 100 * (table.loc["fast", "test_top1"] - table.loc["stock", "test_top1"])
            print(f"\ntest top-1 fast - stock: {gap:+.2f} points  target: within 0.3 points")
        print(json.dumps({"gap_points": gap, "rows": rows}))
    print(f"runs kept in {work}")


if __name__ == "__main__":
    main()
