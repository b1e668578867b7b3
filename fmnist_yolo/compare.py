"""One row per training run: what was trained, how it did, at what cost; for ranking runs in pandas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from .errors import ConfigError
from .metrics import load_history
from .train import PROVENANCE, stored_test

COLUMNS = [
    "name", "model", "pretrained", "epochs", "epochs_completed", "imgsz", "best_epoch", "best_val_top1",
    "test_top1", "test_top5", "macro_f1", "ece", "parameters", "train_time_s", "device", "status", "recorded_by", "path",
]  # fmt: skip


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every run directory under `runs_dir`: Ultralytics writes `args.yaml` into each, ours or not."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: runs directory not found")
    return sorted(p.parent for p in root.rglob("args.yaml") if (p.parent / "results.csv").is_file())


def best_epoch(history: pd.DataFrame, select_on: str = "top1_top5") -> int | None:
    """The epoch saved as best.pt: the last with the highest fitness, Ultralytics' mean(top-1, top-5) or top-1.

    The last, not the first: Ultralytics 8.4 rewrites best.pt whenever an epoch's fitness equals the best so far.
    """
    fitness = history["val_top1"] if select_on == "top1" else (history["val_top1"] + history["val_top5"]) / 2
    return None if fitness.isna().all() else int(fitness[fitness == fitness.max()].index[-1])


def selection_rule(run_dir: str | Path) -> str:
    """How the run chose best.pt: its provenance's select_on, else Ultralytics' own rule."""
    try:
        return json.loads((Path(run_dir) / PROVENANCE).read_text())["args"].get("select_on", "top1_top5")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "top1_top5"


def summarize(run_dir: str | Path) -> dict:
    """One run's row: from `fmnist_yolo.json` when fmnist-yolo trained it, else from Ultralytics' own files."""
    d = Path(run_dir)
    args = yaml.safe_load((d / "args.yaml").read_text()) or {}
    history = load_history(d)
    best = best_epoch(history, selection_rule(d))
    row = {
        "name": d.name,
        "model": Path(str(args.get("model", ""))).name,
        "pretrained": str(args.get("model", "")).endswith(".pt"),
        "epochs": args.get("epochs"),
        "epochs_completed": len(history),
        # Ultralytics trains at imgsz rounded up to the stride, 32 for the classification models
        "imgsz": max(32, math.ceil(int(args.get("imgsz", 224)) / 32) * 32),
        "best_epoch": best,
        "best_val_top1": history.loc[best, "val_top1"] if best is not None else None,
        "train_time_s": history["time"].iloc[-1] if "time" in history and len(history) else None,
        "device": args.get("device"),
        "status": "finished" if len(history) >= int(args.get("epochs") or 0) else "incomplete",
        "recorded_by": "ultralytics",
        "path": str(d),
    }
    if (d / PROVENANCE).is_file():
        p = json.loads((d / PROVENANCE).read_text())
        test = p.get("metrics", {}).get("test", {})  # none yet while running or after an interruption
        row.update(
            model=Path(p["model"]["used"]).name, pretrained=p["model"]["pretrained"], epochs=p["args"]["epochs"],
            imgsz=p["imgsz"].get("effective") or row["imgsz"], test_top1=test.get("top1"), test_top5=test.get("top5"),
            macro_f1=test.get("macro_f1"), ece=test.get("ece"), parameters=p["model"].get("parameters"),
            device=p.get("device"),
            status=p.get("status", "finished"), recorded_by="fmnist-yolo",
        )  # fmt: skip
    elif (test := stored_test(d)) is not None:  # a plain Ultralytics run that `report` has evaluated
        row.update(test_top1=test.top1, test_top5=test.top5, macro_f1=test.macro_f1, ece=test.ece)
    return row


def compare(runs_dir: str | Path = "runs") -> pd.DataFrame:
    """All runs under `runs_dir`, best test top-1 first (runs without a test evaluation last).

    Returns:
        One row per run: name, model, pretrained, epochs (planned), epochs_completed, effective imgsz,
        best_epoch and best_val_top1 (the epoch kept as best.pt), test top-1/top-5, macro-F1 and ECE of best.pt,
        parameters, train_time_s, device, status (finished, running/interrupted, incomplete), recorded_by
        (fmnist-yolo or a plain Ultralytics run) and path.
    """
    root = Path(runs_dir)
    rows = [{**summarize(d), "name": str(d.relative_to(root))} for d in find_runs(root)]  # unique, unlike d.name
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.astype({"epochs": "Int64", "epochs_completed": "Int64", "imgsz": "Int64", "best_epoch": "Int64",
                          "parameters": "Int64", "pretrained": "boolean", "best_val_top1": float, "test_top1": float,
                          "test_top5": float, "macro_f1": float, "ece": float, "train_time_s": float})  # fmt: skip
    table = table.sort_values(["test_top1", "best_val_top1"], ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)
