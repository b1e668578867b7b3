"""Model selection and test-time augmentation for a finished run, decided on val, with test reported once.

    python benchmarks/bench_selection.py RUN_DIR [--from-epoch 50] [--batch 500]

Needs the run's per-epoch weights (train with save_period=1: weights/epoch{k}.pt is epoch k + 1's EMA model).

1. Selection rule. Every kept epoch from --from-epoch on is evaluated on val. The 5,000 val images are cut into two
   fixed random halves; each rule (Ultralytics' mean of top-1 and top-5, or top-1 alone) picks its epoch on one half
   and is scored on the other, both ways round: a held-out estimate of what the rule gains, on val alone.
2. TTA. The run's best.pt on val without TTA, with the flip, and with flip+shift.
Only then test: best.pt (the run's own choice) and, where the adopted rule or TTA setting differs, that choice, once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_yolo import evaluate, load_history
from fmnist_yolo.rundir import best_epoch

RULES = ("top1_top5", "top1")


def hits(ev) -> tuple[np.ndarray, np.ndarray]:
    """Per image: top-1 correct, and the true class among the 5 most probable (ordered by file name)."""
    p = ev.predictions.sort_values("file")
    probs = p[[c for c in p.columns if c.startswith("p_")]].to_numpy()
    true = p["true_id"].to_numpy()
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return p["correct"].to_numpy(bool), (top5 == true[:, None]).any(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--from-epoch", type=int, default=50, help="first epoch considered (1-based)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    history = load_history(args.run)
    kept = args.run / "weights"
    epochs = [e for e in history.index if e >= args.from_epoch and (kept / f"epoch{e - 1}.pt").is_file()]
    top1, top5 = {}, {}
    for e in epochs:
        top1[e], top5[e] = hits(evaluate(args.run / "weights" / f"epoch{e - 1}.pt", "val", batch=args.batch))
        print(f"epoch {e}: val top-1 {top1[e].mean():.4f} (results.csv {history.loc[e, 'val_top1']:.4f})", flush=True)
    n = len(next(iter(top1.values())))
    order = np.random.default_rng(0).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    rows = []
    for rule in RULES:
        for pick, score in ((0, 1), (1, 0)):
            h = pd.DataFrame({"val_top1": [top1[e][halves[pick]].mean() for e in epochs],
                              "val_top5": [top5[e][halves[pick]].mean() for e in epochs]}, index=epochs)  # fmt: skip
            chosen = best_epoch(h, rule)
            rows.append({"rule": rule, "picked_on": "AB"[pick], "epoch": chosen,
                         "held_out_top1": float(top1[chosen][halves[score]].mean())})  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    held = table.groupby("rule")["held_out_top1"].mean()
    full = pd.DataFrame({"val_top1": [top1[e].mean() for e in epochs], "val_top5": [top5[e].mean() for e in epochs]},
                        index=epochs)  # fmt: skip
    chosen_full = {rule: best_epoch(full, rule) for rule in RULES}
    print(f"held-out val top-1 by rule: {held.round(4).to_dict()}; on all of val each picks {chosen_full}")
    adopt_top1 = held["top1"] > held["top1_top5"]

    best = args.run / "weights" / "best.pt"
    tta = {mode: evaluate(best, "val", batch=args.batch, tta=mode or False).top1 for mode in ("", "flip", "flip+shift")}
    print(f"best.pt val top-1 by TTA: {tta}")
    adopt_tta = max(tta, key=lambda m: (tta[m], m == ""))  # a tie keeps no TTA

    result = {"held_out_top1": held.to_dict(), "chosen_on_val": chosen_full, "adopt_select_on_top1": bool(adopt_top1),
              "tta_val_top1": tta, "adopt_tta": adopt_tta or None}  # fmt: skip
    test = {"best.pt": evaluate(best, "test", batch=args.batch)}
    if adopt_top1 and chosen_full["top1"] != chosen_full["top1_top5"]:
        e = chosen_full["top1"]
        test[f"epoch {e} (top1 rule)"] = evaluate(args.run / "weights" / f"epoch{e - 1}.pt", "test", batch=args.batch)
    if adopt_tta:
        test[f"best.pt tta={adopt_tta}"] = evaluate(best, "test", batch=args.batch, tta=adopt_tta)
    result["test"] = {k: {"top1": ev.top1, "macro_f1": ev.macro_f1, "ece": ev.ece} for k, ev in test.items()}
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
