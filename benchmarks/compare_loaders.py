"""Issue 28's decision: do the fast path and the stock loader train the same run? Run directories of the same recipe
and schedule (`fast=True` ones and `fast=False` ones, e.g. all planned for 100 epochs, the stock ones stopped after
20), compared epoch by epoch; with several runs a side, each side's curve is the mean of its runs.

    python benchmarks/compare_loaders.py FAST_RUN STOCK_RUN [--window 11 20] [--loss-from 5]
    python benchmarks/compare_loaders.py --fast RUN [RUN ...] --stock RUN [RUN ...] [--window 11 20] [--loss-from 5]

Prints both curves per epoch (val top-1, training loss) as a Markdown table for benchmarks/RESULTS.md, then the two
criteria: the mean val top-1 over the window within 0.3 points, and the training loss within 0.01 from
`--loss-from` on. Single runs differ by about a point in single early epochs, so only these averages decide; with
two or more runs on a side, each run's window mean is listed and the difference gets its standard error (from the
runs' spread: chaotic training makes every run a draw, benchmarks/compare_steps.py). Exit status 0 when both hold,
1 when either misses, 2 when the runs cannot be compared (too few common epochs). Wall times are not compared here:
a run paused around other jobs carries the pauses in its `time` column; `bench_fast.py epoch` times the two loaders
side by side.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import pandas as pd

from fmnist_yolo import load_history

VAL_TOLERANCE = 0.003  # mean val top-1 over the window, fraction (0.3 points)
LOSS_TOLERANCE = 0.01  # training loss, per epoch from --loss-from on
COLUMNS = ["val_top1", "train_loss"]


def mean_curve(histories: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-epoch mean of several runs' histories, over the epochs all of them have."""
    joined = pd.concat([h[COLUMNS] for h in histories])
    counts = joined.groupby(level=0).size()
    return joined.groupby(level=0).mean().loc[counts[counts == len(histories)].index]


def curves(fast: pd.DataFrame, stock: pd.DataFrame) -> pd.DataFrame:
    """Both histories (or mean curves) side by side over their common epochs, with the differences (fast - stock)."""
    table = fast[COLUMNS].add_suffix("_fast").join(stock[COLUMNS].add_suffix("_stock"), how="inner")
    for c in COLUMNS:
        table[f"{c}_diff"] = table[f"{c}_fast"] - table[f"{c}_stock"]
    return table


def window_means(histories: list[pd.DataFrame], window: tuple[int, int]) -> list[float]:
    """Each run's mean val top-1 over the window's epochs."""
    lo, hi = window
    return [float(h.loc[lo:hi, "val_top1"].mean()) for h in histories]


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


def standard_error(fast: list[float], stock: list[float]) -> float | None:
    """The standard error of the difference of the two sides' means of window means, from the runs' spread (the
    sides pooled, as one loader's noise estimates the other's where it has one run); None with too few runs."""
    sides = [s for s in (fast, stock) if len(s) > 1]
    if not sides:
        return None
    pooled = sum((len(s) - 1) * statistics.variance(s) for s in sides) / sum(len(s) - 1 for s in sides)
    return math.sqrt(pooled * (1 / len(fast) + 1 / len(stock)))


def main(argv: list[str] | None = None) -> int:
    """Print the curves and the verdict; exit 0 when both criteria hold."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pair", nargs="*", metavar="FAST_RUN STOCK_RUN")
    p.add_argument("--fast", nargs="+", default=[], metavar="RUN", help="fast=True runs (instead of the pair)")
    p.add_argument("--stock", nargs="+", default=[], metavar="RUN", help="stock-loader runs (instead of the pair)")
    p.add_argument("--window", nargs=2, type=int, default=(11, 20), metavar=("FIRST", "LAST"))
    p.add_argument("--loss-from", type=int, default=5)
    a = p.parse_args(argv)
    if (len(a.pair), bool(a.fast), bool(a.stock)) not in {(2, False, False), (0, True, True)}:
        p.error("give FAST_RUN STOCK_RUN, or --fast RUN ... --stock RUN ...")
    fast_runs, stock_runs = (a.pair[:1], a.pair[1:]) if a.pair else (a.fast, a.stock)
    fast, stock = [load_history(r) for r in fast_runs], [load_history(r) for r in stock_runs]
    table = curves(mean_curve(fast), mean_curve(stock))
    print(table.to_markdown(floatfmt=".4f"))
    try:
        v = verdict(table, tuple(a.window), a.loss_from)
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    lo, hi = a.window
    sides = {"fast": window_means(fast, a.window), "stock": window_means(stock, a.window)}
    if len(fast) > 1 or len(stock) > 1:
        for name, means in sides.items():
            print(f"{name} runs, mean val top-1 over epochs {lo}-{hi}: " + ", ".join(f"{m:.4f}" for m in means))
    se = standard_error(sides["fast"], sides["stock"])
    spread = f", standard error {100 * se:.2f}" if se is not None else ""
    print(f"\nmean val top-1, epochs {lo}-{hi}: fast {v['mean_val_top1']['fast']:.4f}, stock "
          f"{v['mean_val_top1']['stock']:.4f} ({100 * v['val_difference']:+.2f} points{spread}; within "
          f"{100 * VAL_TOLERANCE:.1f}: {'yes' if v['val_holds'] else 'NO'})")  # fmt: skip
    print(f"training loss from epoch {a.loss_from}: largest difference {v['max_loss_difference']:.4f} (within "
          f"{LOSS_TOLERANCE}: {'yes' if v['loss_holds'] else 'NO'}); mean difference "
          f"{v['mean_loss_difference']:+.4f}")  # fmt: skip
    return 0 if v["val_holds"] and v["loss_holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
