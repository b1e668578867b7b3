"""One row per training run: what was trained, how it did, at what cost; for ranking runs in pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import DEFAULTS, RUNS_DIR
from ..errors import ConfigError, RunError, warn
from ..evaluation.evaluate import stored_test
from ..files import write_text
from ..rundir import PROVENANCE, RESULTS, read_reproduction, recorded_row

COLUMNS = [
    "name", "model", "pretrained", "epochs", "epochs_completed", "imgsz", "loader", "best_epoch", "best_val_top1",
    "test_top1", "test_top5", "macro_f1", "ece", "parameters", "train_time_s", "device", "status", "recorded_by",
    "reproduces", "verdict", "path",
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


def comparison_row(run_dir: str | Path) -> dict:
    """One run's row (rundir.recorded_row), with the test columns of a plain Ultralytics run that `report` or `Run.load`
    has evaluated since. RunError names the file when one of the run's files is damaged."""
    d = Path(run_dir)
    row = recorded_row(d)
    finished = row["recorded_by"] == "ultralytics" or row["status"] == "finished"  # not an unfinished run's best.pt
    if row.get("test_top1") is None and finished and (test := stored_test(d)) is not None:
        row.update(test_top1=test.top1, test_top5=test.top5, macro_f1=test.macro_f1, ece=test.ece)
    reproduction = read_reproduction(d) or {}  # a run made by `reproduce`: of which run, and how well
    row.update(reproduces=reproduction.get("reproduces"), verdict=reproduction.get("verdict"))
    return row


def compare(
    runs_dir: str | Path = RUNS_DIR,
    skip_damaged: bool = DEFAULTS.skip_damaged,
    csv: str | Path | None = None,
    source: str = "runs",
) -> pd.DataFrame:
    """All runs under `runs_dir`, best test top-1 first (runs without a test evaluation last).

    Args:
        runs_dir: where to look (default: the project's runs/).
        source: "runs" reads the run directories; "mlflow" reads what fmnist-yolo logged to MLflow (the store of
            fmnist_yolo.tracking) for runs under `runs_dir`, with the same columns.
        skip_damaged: list a run whose files are damaged with status "damaged" and warn, instead of stopping with
            the error that names the damaged file.
        csv: also write the table there (a .csv file, or a directory to hold compare.csv).

    Returns:
        One row per run: name, model, pretrained, epochs (planned), epochs_completed, effective imgsz,
        best_epoch and best_val_top1 (the epoch kept as best.pt), test top-1/top-5, macro-F1 and ECE of best.pt,
        parameters, train_time_s, device, status (finished, running/interrupted, incomplete, stopped, failed,
        damaged), recorded_by (fmnist-yolo or a plain Ultralytics run), reproduces and verdict (for a run made by
        `reproduce`: the run it reproduces, named as in this table when it is under `runs_dir`, and its verdict:
        identical, equal within rounding or different) and path.
    """
    root = Path(runs_dir)
    if source not in ("runs", "mlflow"):
        raise ConfigError(f"source must be runs or mlflow, found {source!r}")
    rows = _from_mlflow(root) if source == "mlflow" else []
    for d in find_runs(root) if source == "runs" else []:
        try:
            row = comparison_row(d)
        except RunError as e:
            if not skip_damaged:
                raise RunError(f"{e} (compare skip_damaged=True lists the other runs)") from None
            warn(str(e))
            row = {"status": "damaged", "path": str(d)}
        if row.get("reproduces") and Path(row["reproduces"]).is_relative_to(root.absolute()):  # named as its row is
            row["reproduces"] = str(Path(row["reproduces"]).relative_to(root.absolute()))
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


def _from_mlflow(root: Path) -> list[dict]:
    """compare()'s rows as fmnist-yolo logged them to MLflow, for the runs under `root`."""
    from .. import tracking

    if not tracking.enabled(True):
        return []
    table = tracking.runs_table()
    rows, seen = [], set()
    base = root.absolute()
    for row in table.to_dict("records"):  # newest first: a resumed run's latest MLflow run counts
        path = Path(str(row["path"]))
        if not path.is_relative_to(base) or path in seen:
            continue
        seen.add(path)
        row["name"] = str(path.relative_to(base))
        row["pretrained"] = {"True": True, "False": False}.get(str(row["pretrained"]), None)
        for key in ("epochs", "imgsz"):
            row[key] = int(float(row[key])) if row.get(key) not in (None, "None") else None
        rows.append({k: row.get(k) for k in COLUMNS})
    return rows
