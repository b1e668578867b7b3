"""Issue 28's decision: do the fast path and the stock loader train the same run? Two run directories of the same
recipe and schedule (one `fast=True`, one `fast=False`, e.g. both planned for 100 epochs, the stock one stopped
after 20), compared epoch by epoch.

    python benchmarks/compare_loaders.py FAST_RUN STOCK_RUN [--window 11 20] [--loss-from 5]

Prints both curves per epoch (val top-1, training loss) as a Markdown table for benchmarks/RESULTS.md, then the two
criteria: the mean val top-1 over the window within 0.3 points, and the training loss within 0.01 from
`--loss-from` on. Single runs differ by about a point in single early epochs, so only these averages decide. Exit
status 0 when both hold, 1 when either misses, 2 when the runs cannot be compared (too few common epochs).
Wall times are not compared here: a run paused around other jobs carries the pauses in its `time` column;
`bench_fast.py epoch` times the two loaders side by side.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from fmnist_yolo import load_history

VAL_TOLERANCE = 0.003  # mean val top-1 over the window, fraction (0.3 points)
LOSS_TOLERANCE = 0.01  # training loss, per epoch from --loss-from on


def curves(fast: pd.DataFrame, stock: pd.DataFrame) -> pd.DataFrame:
    """Both histories side by side over their common epochs, with the differences (fast - stock)."""
    cols = ["val_top1", "train_loss"]
    table = fast[cols].add_suffix("_fast").join(stock[cols].add_suffix("_stock"), how="inner")
    for c in cols:
        table[f"{c}_diff"] = table[f"{c}_fast"] - table[f"{c}_stock"]
    return table


def verdict(table: pd.DataFrame, window: tuple[int, int], loss_from: int) -> dict:
    """The two criteria over `table` (from `curves`): figures and whether each holds."""
    lo, hi = window
    w = table.loc[lo:hi]
    if len(w) < hi - lo + 1:
        raise ValueError(f"epochs {lo}-{hi} are not all in both runs (common epochs: {list(table.index)})")
    val = {"fast": float(w["val_top1_fast"].mean()), "stock": float(w["val_top1_stock"].mean())}
    signed = table.loc[loss_from:, "train_loss_diff"]
    loss = signed.abs()
    return {
        "mean_val_top1": val,
        "val_difference": val["fast"] - val["stock"],
        "val_holds": abs(val["fast"] - val["stock"]) <= VAL_TOLERANCE,
        "max_loss_difference": float(loss.max()),
        "mean_loss_difference": float(signed.mean()),  # the bias, beside the per-epoch bar that seed noise can miss
        "loss_holds": bool((loss <= LOSS_TOLERANCE).all()),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the curves and the verdict; exit 0 when both criteria hold."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fast_run")
    p.add_argument("stock_run")
    p.add_argument("--window", nargs=2, type=int, default=(11, 20), metavar=("FIRST", "LAST"))
    p.add_argument("--loss-from", type=int, default=5)
    a = p.parse_args(argv)
    table = curves(load_history(a.fast_run), load_history(a.stock_run))
    print(table.to_markdown(floatfmt=".4f"))
    try:
        v = verdict(table, tuple(a.window), a.loss_from)
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    lo, hi = a.window
    print(f"\nmean val top-1, epochs {lo}-{hi}: fast {v['mean_val_top1']['fast']:.4f}, stock "
          f"{v['mean_val_top1']['stock']:.4f} ({100 * v['val_difference']:+.2f} points; within "
          f"{100 * VAL_TOLERANCE:.1f}: {'yes' if v['val_holds'] else 'NO'})")  # fmt: skip
    print(f"training loss from epoch {a.loss_from}: largest difference {v['max_loss_difference']:.4f} (within "
          f"{LOSS_TOLERANCE}: {'yes' if v['loss_holds'] else 'NO'}); mean difference "
          f"{v['mean_loss_difference']:+.4f}")  # fmt: skip
    return 0 if v["val_holds"] and v["loss_holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
