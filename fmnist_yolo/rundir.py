"""The run directory contract: what a training run leaves on disk, its one provenance writer (Recorder), readers.

    RUN/fmnist_yolo.json        the provenance record (Provenance), written by fmnist-yolo only, through Recorder
    RUN/args.yaml               Ultralytics' own record of the train arguments
    RUN/results.csv             Ultralytics' per-epoch history (load_history reads it)
    RUN/weights/best.pt         best epoch on val;  RUN/weights/last.pt  the latest epoch (resume)
    RUN/weights/.last.safe.pt   an atomic copy of last.pt (Ultralytics writes last.pt in place)
    RUN/test_predictions.csv    best.pt's per-image test predictions (derived: rebuilt when stale), a `weights` column
                                naming them
    RUN/reproduction.json       in a run made by `reproduce`: the run it reproduces and the verdict (reproduction.py)
    RUN/report.md, RUN/report/  the report (derived)
    RUN/test_predictions.<tree>-<manifest sha256[:12]>.csv, RUN/report.<tree>-<...>.md and /
                                `report data=` on another tree: kept apart, never the run's own result

Plain `yolo classify train` runs have the Ultralytics files only; every reader here accepts them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .config import DEFAULTS
from .errors import RunError
from .files import read_csv, read_json, read_yaml, write_text
from .version import __version__

SCHEMA = 3  # fmnist_yolo.json's schema; older ones are read with defaults (1 has no "schema" key; 3 adds environment,
# data.prepared and model.sha256: what reproduce needs)
PROVENANCE = "fmnist_yolo.json"
TEST_PREDICTIONS = "test_predictions.csv"
RESULTS = "results.csv"
ARGS = "args.yaml"
SAFE_LAST = ".last.safe.pt"
REPORT = "report.md"
REPRODUCTION = "reproduction.json"
REPORT_ASSETS = "report"
STATUSES = ("running", "finished", "stopped", "failed")  # stopped: ended early by a search (ASHA)


def _file(*parts: str) -> property:
    """A path of the contract, relative to the run directory."""
    return property(lambda self: self.dir.joinpath(*parts), doc=f"RUN/{'/'.join(parts)}")


@dataclass(frozen=True)
class RunPaths:
    """Every path of the contract for one run directory."""

    dir: Path
    provenance = _file(PROVENANCE)
    args = _file(ARGS)
    results = _file(RESULTS)
    best = _file("weights", "best.pt")
    last = _file("weights", "last.pt")
    safe_last = _file("weights", SAFE_LAST)
    test_predictions = _file(TEST_PREDICTIONS)
    report = _file(REPORT)
    reproduction = _file(REPRODUCTION)
    report_assets = _file(REPORT_ASSETS)


def paths(run_dir: str | Path) -> RunPaths:
    """The contract's paths for `run_dir`."""
    return RunPaths(Path(run_dir))


def is_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` is a training run directory (Ultralytics writes args.yaml and results.csv into each)."""
    p = paths(run_dir)
    return p.args.is_file() and p.results.is_file()


@dataclass
class Provenance:
    """fmnist_yolo.json: how a run was made and what it gave. Nested parts are plain dicts, as in the file.

    status: running (written when training starts), finished, stopped (by a search), failed (before its first
    epoch ended). metrics: {"val": {top1, top5}, "test": Evaluation.headline_figures() or None}.
    """

    status: str = "running"
    args: dict = field(default_factory=dict)  # the resolved train arguments, ours included
    recipe: dict = field(default_factory=dict)  # {name, file}
    requested: dict = field(default_factory=dict)  # the arguments as the user gave them
    imgsz: dict = field(default_factory=dict)  # {requested, effective, note}
    model: dict = field(default_factory=dict)  # {requested, used, pretrained, source, tried, parameters, sha256}
    # {tree, manifest_sha256, prepared (data.tree.identity), has_val, model_selection_split, _metric}
    data: dict = field(default_factory=dict)
    device: str | None = None
    amp: bool | None = None
    precision: dict = field(default_factory=dict)  # amp=bf16 on a CPU: {asked, used, ms_per_pass}, measured at start
    world_size: int = 1
    epochs_planned: int | None = None
    epochs_completed: int | None = None
    run_dir: str | None = None
    versions: dict = field(default_factory=dict)
    # {commit, dirty, diff_sha256, seed, init_seed, deterministic, torch_threads, gpu} (training.environment)
    environment: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    eta: dict = field(default_factory=dict)  # {after_epoch, epoch_s, remaining_s, ends_at}: the expected end
    metrics: dict = field(default_factory=dict)
    test_predictions: str | None = None
    resumed: list = field(default_factory=list)  # one entry per resume: checkpoint, completed_epochs, at, ...
    error: str | None = None  # why a failed run failed
    stopped_by: str | None = None
    export: dict = field(default_factory=dict)  # exported models and their agreement with best.pt
    tracking: dict = field(default_factory=dict)  # {"mlflow": {"uri", "experiment", "run_id"}} when tracked
    fmnist_yolo_version: str = __version__
    schema: int = SCHEMA
    extra: dict = field(default_factory=dict)  # keys of a newer schema, kept as read

    @property
    def select_on(self) -> str:
        """How best.pt was chosen: "top1_top5" (Ultralytics' rule) or "top1"."""
        return self.args.get("select_on") or self.data.get("model_selection_metric") or DEFAULTS.select_on

    @property
    def test(self) -> dict | None:
        """best.pt's headline test figures (Evaluation.headline_figures), or None (not evaluated yet, or
        evaluate_test=False)."""
        return (self.metrics or {}).get("test")

    def to_dict(self) -> dict:
        """The JSON object written to fmnist_yolo.json."""
        d = dataclasses.asdict(self)
        return {**d.pop("extra"), **d}

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = PROVENANCE) -> Provenance:
        """A record from a file's JSON object; missing keys (older schema) take their defaults."""
        if not isinstance(d, dict):
            raise RunError(f"{source}: not a provenance record (a JSON object expected, found {type(d).__name__})")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        defaults = cls()
        wrong = [
            k
            for k, v in known.items()
            if isinstance(getattr(defaults, k), (dict, list)) and not isinstance(v, type(getattr(defaults, k)))
        ]
        if wrong:
            raise RunError(f"{source}: damaged provenance record: '{wrong[0]}' has the wrong type")
        if known.get("status", "running") not in STATUSES:
            raise RunError(f"{source}: unknown status {known['status']!r} (expected one of {', '.join(STATUSES)})")
        return cls(**{**known, "schema": d.get("schema", 1)}, extra={k: v for k, v in d.items() if k not in names})


def read_provenance(run_dir: str | Path) -> Provenance | None:
    """The run's provenance record; None for a run that fmnist-yolo did not make (no fmnist_yolo.json).

    Raises RunError naming the file when it is unreadable or damaged.
    """
    path = paths(run_dir).provenance
    if not path.exists():
        return None
    return Provenance.from_dict(read_json(path, RunError, "provenance record"), path)


# What each status may become (Recorder enforces it): a running run is started again (resumed), records its epochs
# and ends; a stopped or failed one can only be resumed; a finished one only marked stopped (`reproduce epochs=N`:
# the first N epochs of a longer run). `add` keeps the status.
TRANSITIONS = {
    "running": ("running", "finished", "stopped", "failed"),
    "stopped": ("running",),
    "failed": ("running",),
    "finished": ("stopped",),
}


class Recorder:
    """The one writer of a run's fmnist_yolo.json: each method is one atomic write (files.py), so a kill or a full
    disk leaves the previous record whole, and a write that fails changes neither the file nor `record`.

    Invariants, checked before writing: the status changes only through start, fail, finish and stop, and only
    as TRANSITIONS allow; the schema is the one the record was made or read with (a record of an older schema keeps
    its number: its missing keys are still missing). A refusal is one RunError line naming the file.

    Training:  start (status running, when the run directory exists), epoch (progress, eta), then finish (final
    figures) or fail (an error before the first epoch ended). Later stages: add (an export, a test evaluation, ...)
    and stop (a search or a partial reproduction ended the run early).
    """

    def __init__(self, record: Provenance, run_dir: str | Path | None = None) -> None:
        self.record = record  # the live record: Run and callers read it; it changes only after a successful write
        self.dir = Path(run_dir) if run_dir is not None else None
        self._status, self._schema = record.status, record.schema  # as made or read: what later writes must keep

    @classmethod
    def open(cls, run_dir: str | Path) -> Recorder | None:
        """The recorder of an existing record; None for a run fmnist-yolo did not make (no fmnist_yolo.json)."""
        record = read_provenance(run_dir)
        return None if record is None else cls(record, run_dir)

    @property
    def path(self) -> Path:
        """The record's file (its bare name while the run directory is not known yet)."""
        return paths(self.dir).provenance if self.dir is not None else Path(PROVENANCE)

    def start(self, at: str | Path, **fields) -> Path:
        """The record when training starts (or resumes) in the run directory `at`: status running, and what the
        caller gathered."""
        self.dir = Path(at)
        return self._write("running", fields)

    def epoch(self, **fields) -> Path:
        """After an epoch: its progress (wall_time_s, epochs_completed, eta); the run stays running."""
        if self._status != "running":  # a stopped or failed run is started (resumed) first
            raise RunError(f"{self.path}: a {self._status} run records no epoch (only a running one does)")
        return self._write("running", fields)

    def fail(self, message: str, run_dir: str | Path | None = None) -> Path | None:
        """Mark a run that failed before its first epoch ended, with why (`run_dir`: where Ultralytics made it, when
        start was never reached). A later failure writes nothing: the `running` record and last.pt resume it.
        None when nothing was written (no run directory, or a resumable run)."""
        run_dir = self.dir or (Path(run_dir) if run_dir is not None else None)
        if run_dir is None or not run_dir.is_dir() or paths(run_dir).last.is_file():
            return None
        self.dir = run_dir
        return self._write("failed", {"error": message})

    def finish(self, at: str | Path | None = None, **fields) -> Path:
        """The end of training: status finished and the final figures (metrics, epochs_completed, wall_time_s, ...);
        `at`: the run directory, for a process that never saw the start (the parent of DDP workers)."""
        if at is not None:
            self.dir = Path(at)
        return self._write("finished", fields)

    def stop(self, by: str, **fields) -> Path:
        """Mark the run ended early by `by` (an ASHA search, a reproduction of the first epochs)."""
        return self._write("stopped", {**fields, "stopped_by": by})

    def add(self, **fields) -> Path:
        """A later stage's part of the record (export, metrics, recipe, ...), the status unchanged."""
        return self._write(None, fields)

    def _write(self, status: str | None, fields: dict) -> Path:
        """Check the invariants, write the record with `status` (None: unchanged) and `fields` atomically, and only
        then update `record`."""
        if self.dir is None:
            raise RunError(f"{PROVENANCE}: no run directory to write the record in (start the run first)")
        names = {f.name for f in dataclasses.fields(Provenance)} - {"status", "schema"}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise TypeError(f"{self.path}: not fields the recorder writes: {', '.join(unknown)}")
        now = self._status
        if self.record.status != now:
            raise RunError(f"{self.path}: the record's status was set to {self.record.status} directly (it changes "
                           "only through start, fail, finish or stop)")  # fmt: skip
        if status is None:
            status = now
        elif status not in TRANSITIONS[now]:
            can = " or ".join(TRANSITIONS[now])
            raise RunError(f"{self.path}: a {now} run cannot become {status} (it can become {can})")
        if self.record.schema != self._schema:
            raise RunError(f"{self.path}: the record's schema changed from {self._schema} to {self.record.schema}")
        updated = dataclasses.replace(self.record, status=status, **fields)
        write_text(self.path, json.dumps(updated.to_dict(), indent=1, default=str) + "\n")
        for name, value in {"status": status, **fields}.items():
            setattr(self.record, name, value)
        self._status = status
        return self.path


def read_reproduction(run_dir: str | Path) -> dict | None:
    """reproduction.json of a run made by `reproduce` (the run it reproduces, the verdict); None in any other run.

    Raises RunError naming the file when it is unreadable or damaged.
    """
    path = paths(run_dir).reproduction
    if not path.exists():
        return None
    verdict = read_json(path, RunError, "reproduction record")
    if not isinstance(verdict, dict) or not {"reproduces", "verdict"} <= set(verdict):
        raise RunError(f"{path}: damaged reproduction record (expected an object with reproduces and verdict)")
    return verdict


def read_args(run_dir: str | Path) -> dict:
    """Ultralytics' args.yaml of the run (a mapping); RunError naming the file when damaged."""
    path = paths(run_dir).args
    args = read_yaml(path, RunError, "Ultralytics' argument record") or {}
    if not isinstance(args, dict):
        raise RunError(f"{path}: Ultralytics' argument record is not a mapping")
    return args


HISTORY_COLUMNS = {
    "train/loss": "train_loss",
    "metrics/accuracy_top1": "val_top1",
    "metrics/accuracy_top5": "val_top5",
    "val/loss": "val_loss",
    "lr/pg0": "lr_pg0",
    "lr/pg1": "lr_pg1",
    "lr/pg2": "lr_pg2",
}


def load_history(run: str | Path):
    """A run's `results.csv` as a tidy DataFrame: one row per epoch, numeric columns.

    Columns: epoch, time (cumulative seconds), train_loss, val_loss, val_top1, val_top5, lr_pg0..2 (and any other
    learning-rate groups as Ultralytics names them). RunError names the file when it is cut off or damaged.
    """
    import pandas as pd

    path = Path(run)
    path = path / RESULTS if path.is_dir() else path
    table = read_csv(path, RunError, "training history", ("epoch", "metrics/accuracy_top1", "metrics/accuracy_top5"))
    df = table.rename(columns=HISTORY_COLUMNS).apply(pd.to_numeric, errors="coerce")
    bad = df.isna().any(axis=1)  # Ultralytics writes every column of every row: a gap is a cut or damaged row
    if bad.any():
        row = int(bad.to_numpy().argmax()) + 2  # the header is line 1
        raise RunError(f"{path}: training history is damaged at line {row} (a missing or non-numeric value)")
    df = df.astype({"epoch": int})
    # A run killed between writing an epoch's row and its checkpoint repeats that epoch when resumed: keep the rerun
    return df.drop_duplicates("epoch", keep="last").set_index("epoch", drop=False)


def best_epoch(history, select_on: str = DEFAULTS.select_on) -> int | None:
    """The epoch saved as best.pt: the last with the highest fitness, Ultralytics' mean(top-1, top-5) or top-1.

    The last, not the first: Ultralytics 8.4 rewrites best.pt whenever an epoch's fitness equals the best so far.
    """
    fitness = history["val_top1"] if select_on == "top1" else (history["val_top1"] + history["val_top5"]) / 2
    return None if fitness.isna().all() else int(fitness[fitness == fitness.max()].index[-1])


def training_seconds(history) -> float | None:
    """Seconds of training (and per-epoch validation) in results.csv. Ultralytics' `time` column restarts from zero
    after a resume: each epoch's duration is its step from the epoch before, or its own value after a restart."""
    if history is None or "time" not in history or not len(history):
        return None
    t = history["time"].astype(float)
    steps = t.diff()
    return float(t.where(steps.isna() | (steps < 0), steps).sum())


def trained_imgsz(imgsz) -> int | None:
    """The size Ultralytics trains a classification model at: imgsz rounded up to the stride, 32 (None if unknown)."""
    if isinstance(imgsz, bool) or not isinstance(imgsz, (int, float)):
        return None
    return max(32, math.ceil(int(imgsz) / 32) * 32)


def recorded_row(run_dir: str | Path) -> dict:
    """One run's row for comparing runs: from `fmnist_yolo.json` when fmnist-yolo trained it, else from
    Ultralytics' own files (args.yaml, results.csv). RunError names the file when one of them is damaged."""
    d = Path(run_dir)
    args = read_args(d)
    record = read_provenance(d)
    history = load_history(d) if paths(d).results.is_file() else None
    best = best_epoch(history, record.select_on if record else DEFAULTS.select_on) if history is not None else None
    imgsz = args.get("imgsz", 224)
    row = {
        "name": d.name,
        "model": Path(str(args.get("model", ""))).name,
        "pretrained": str(args.get("model", "")).endswith(".pt"),
        "epochs": args.get("epochs"),
        "epochs_completed": len(history) if history is not None else 0,
        "imgsz": trained_imgsz(imgsz),
        "loader": "stock",  # Ultralytics' own runs: its loader
        "best_epoch": best,
        "best_val_top1": history.loc[best, "val_top1"] if best is not None else None,
        "train_time_s": training_seconds(history),
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
            imgsz=record.imgsz.get("effective") or row["imgsz"], loader="fast" if record.args.get("fast") else "stock",
            test_top1=test.get("top1"), test_top5=test.get("top5"),
            macro_f1=test.get("macro_f1"), ece=test.get("ece"), parameters=record.model.get("parameters"),
            device=record.device, status=record.status, recorded_by="fmnist-yolo",
        )  # fmt: skip
    return row


def predictions_current(run_dir: str | Path) -> bool:
    """Whether test_predictions.csv exists and is not older than best.pt (else it is rebuilt from best.pt)."""
    p = paths(run_dir)
    if not p.test_predictions.is_file():
        return False
    return not p.best.is_file() or p.test_predictions.stat().st_mtime >= p.best.stat().st_mtime
