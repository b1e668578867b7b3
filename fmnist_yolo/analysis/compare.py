"""One row per training run: what was trained, how it did, at what cost; for ranking runs in pandas."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..config import RUNS_DIR
from ..errors import ConfigError, RunError, warn
from ..evaluation.evaluate import stored_test
from ..files import write_text
from ..rundir import PROVENANCE, RESULTS, best_epoch, load_history, paths, read_args, read_provenance

COLUMNS = [
    "name", "model", "pretrained", "epochs", "epochs_completed", "imgsz", "best_epoch", "best_val_top1",
    "test_top1", "test_top5", "macro_f1", "ece", "parameters", "train_time_s", "device", "status", "recorded_by",
    "path",
]  # fmt: skip


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every run directory under `runs_dir`: Ultralytics writes args.yaml into each (ours or not); ours that
    failed before their first epoch have fmnist_yolo.json and no results.csv yet."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: runs directory not found")
    found = {p.parent for p in root.rglob("args.yaml") if (p.parent / RESULTS).is_file()}
    found |= {p.parent for p in root.rglob(PROVENANCE) if (p.parent / "args.yaml").is_file()}
    return sorted(found)


def summarize(run_dir: str | Path) -> dict:
    """One run's row: from `fmnist_yolo.json` when fmnist-yolo trained it, else from Ultralytics' own files.

    RunError names the file when one of them is damaged.
    """
    d = Path(run_dir)
    args = read_args(d)
    record = read_provenance(d)
    history = load_history(d) if paths(d).results.is_file() else None
    best = best_epoch(history, record.select_on if record else "top1_top5") if history is not None else None
    imgsz = args.get("imgsz", 224)
    row = {
        "name": d.name,
        "model": Path(str(args.get("model", ""))).name,
        "pretrained": str(args.get("model", "")).endswith(".pt"),
        "epochs": args.get("epochs"),
        "epochs_completed": len(history) if history is not None else 0,
        # Ultralytics trains at imgsz rounded up to the stride, 32 for the classification models
        "imgsz": max(32, math.ceil(int(imgsz) / 32) * 32) if isinstance(imgsz, (int, float)) else None,
        "best_epoch": best,
        "best_val_top1": history.loc[best, "val_top1"] if best is not None else None,
        "train_time_s": history["time"].iloc[-1]
        if history is not None and "time" in history and len(history)
        else None,
        "device": args.get("device"),
        "status": "finished" if history is not None and len(history) >= int(args.get("epochs") or 0) else "incomplete",
        "recorded_by": "ultralytics",
        "path": str(d),
    }
    if record is not None:
        test = record.test or {}  # none while running, after an interruption, or with evaluate_test=False
        row.update(
            model=Path(str(record.model.get("used", row["model"]))).name,
            pretrained=record.model.get("pretrained", row["pretrained"]),
            epochs=record.args.get("epochs", row["epochs"]),
            imgsz=record.imgsz.get("effective") or row["imgsz"], test_top1=test.get("top1"), test_top5=test.get("top5"),
            macro_f1=test.get("macro_f1"), ece=test.get("ece"), parameters=record.model.get("parameters"),
            device=record.device, status=record.status, recorded_by="fmnist-yolo",
        )  # fmt: skip
    finished = record is None or record.status == "finished"  # an unfinished run's best.pt is not its result yet
    if row.get("test_top1") is None and finished and (test := stored_test(d)) is not None:  # `report`, Run.load
        row.update(test_top1=test.top1, test_top5=test.top5, macro_f1=test.macro_f1, ece=test.ece)
    return row


def compare(runs_dir: str | Path = RUNS_DIR, skip_damaged: bool = False, csv: str | Path | None = None) -> pd.DataFrame:
    """All runs under `runs_dir`, best test top-1 first (runs without a test evaluation last).

    Args:
        runs_dir: where to look (default: the project's runs/).
        skip_damaged: list a run whose files are damaged with status "damaged" and warn, instead of stopping with
            the error that names the damaged file.
        csv: also write the table there (a .csv file, or a directory to hold compare.csv).

    Returns:
        One row per run: name, model, pretrained, epochs (planned), epochs_completed, effective imgsz,
        best_epoch and best_val_top1 (the epoch kept as best.pt), test top-1/top-5, macro-F1 and ECE of best.pt,
        parameters, train_time_s, device, status (finished, running/interrupted, incomplete, stopped, failed,
        damaged), recorded_by (fmnist-yolo or a plain Ultralytics run) and path.
    """
    root = Path(runs_dir)
    rows = []
    for d in find_runs(root):
        try:
            row = summarize(d)
        except RunError as e:
            if not skip_damaged:
                raise RunError(f"{e} (compare skip_damaged=True lists the other runs)") from None
            warn(str(e))
            row = {"status": "damaged", "path": str(d)}
        rows.append({**row, "name": str(d.relative_to(root))})  # unique, unlike d.name
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.astype({"epochs": "Int64", "epochs_completed": "Int64", "imgsz": "Int64", "best_epoch": "Int64",
                          "parameters": "Int64", "pretrained": "boolean", "best_val_top1": float, "test_top1": float,
                          "test_top5": float, "macro_f1": float, "ece": float, "train_time_s": float})  # fmt: skip
    table = table.sort_values(["test_top1", "best_val_top1"], ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    if csv is not None:
        target = Path(csv) if str(csv).endswith(".csv") else Path(csv) / "compare.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, table.to_csv(index=False))
        table.attrs["csv"] = str(target)
    return table
