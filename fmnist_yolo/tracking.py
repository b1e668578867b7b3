"""MLflow tracking: each fmnist-yolo run owns one MLflow run, and logs there what Ultralytics' callback does not.

Ultralytics' own MLflow callback (on when its `mlflow` setting is, and mlflow is installed) logs the train arguments,
per-epoch losses, learning rates and val top-1/top-5 into the active MLflow run, and does not end a run it did not
start. fmnist-yolo starts that run itself, so the same run also gets the provenance (parameters and tags), best.pt's
test top-1/top-5/macro-F1/ECE (metrics), per-class metrics and the confusion matrix (CSV artifacts), and later the
report. A tracking failure (server down, store locked) is warned about once and never stops or changes training.

The store: MLFLOW_TRACKING_URI when set, else one SQLite database for the whole project, `runs/mlflow.db` (absolute,
so runs from any working directory land in one place), its artifacts in `runs/mlartifacts/`. The experiment:
MLFLOW_EXPERIMENT_NAME, else "fmnist-yolo".
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .config import RUNS_DIR
from .errors import ConfigError, warn
from .rundir import paths

EXPERIMENT = "fmnist-yolo"  # unless MLFLOW_EXPERIMENT_NAME says otherwise
STORE = "mlflow.db"  # under the project's runs/
ARTIFACTS = "mlartifacts"  # under the project's runs/: MLflow's default for a SQLite store is ./mlruns in the cwd
PARENT_ENV = "FMNIST_YOLO_MLFLOW_PARENT"  # set by `tune` in its trials: the search's MLflow run, their parent
ROW_TAGS = ("model", "pretrained", "epochs", "imgsz", "loader", "device", "status", "recorded_by", "name", "path")
ROW_METRICS = ("epochs_completed", "best_epoch", "best_val_top1", "test_top1", "test_top5", "macro_f1", "ece",
               "parameters", "train_time_s")  # fmt: skip
_WARNED: set[str] = set()


def enabled(requested: bool | None = None) -> bool:
    """Whether to track: mlflow installed, Ultralytics' `mlflow` setting on, and not switched off with mlflow=False.

    mlflow=True without the package is an error (the extra is missing); left unset, tracking follows the rest.
    """
    if requested is False:
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if requested:
            raise ConfigError("mlflow=True needs MLflow: pip install 'fmnist-yolo[mlflow]'") from None
        return False
    from ultralytics.utils import SETTINGS

    return bool(requested) or SETTINGS.get("mlflow", True) is not False


def tracking_uri() -> str:
    """The MLflow store: MLFLOW_TRACKING_URI, else the project's runs/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _own_store()


def _own_store() -> str:
    return f"sqlite:///{(RUNS_DIR / STORE).absolute()}"


def experiment_name() -> str:
    """The MLflow experiment fmnist-yolo logs into."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def _use_experiment(mlflow) -> None:
    """Make the experiment current; created in the project's own store, its artifacts go to runs/mlartifacts/."""
    name = experiment_name()
    if tracking_uri() == _own_store() and mlflow.get_experiment_by_name(name) is None:  # (MLflow sets the env var)
        mlflow.create_experiment(name, artifact_location=(RUNS_DIR / ARTIFACTS).absolute().as_uri())
    mlflow.set_experiment(name)


def _warn_once(what: str, e: Exception) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        warn(f"MLflow: {what} failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
             "training goes on without tracking")  # fmt: skip


_READY: set[str] = set()  # stores this process has made sure of


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// store URI (None for any other store, or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Held while a SQLite store's schema and the experiment are made: MLflow creates and migrates a new store's
    tables (and create_experiment checks, then inserts) without a lock, so runs starting at once race themselves
    ("table latest_metrics already exists") and lose their tracking. A server does this itself: no lock then."""
    db = _sqlite_file(uri)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        fcntl = None
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f".{db.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _client():
    """mlflow, pointed at the store; a SQLite store is created once, under the lock, before anything uses it."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri not in _READY and _sqlite_file(uri) is not None:
        with _store_lock(uri):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)  # builds (and migrates) the schema
        _READY.add(uri)
    return mlflow


class Tracker:
    """One fmnist-yolo run's MLflow run; every call is safe: a failure is warned once and tracking stops."""

    def __init__(self, name: str):
        self.name, self.run_id, self.ok = name, None, False

    def start(self, tags: dict[str, Any] | None = None) -> Tracker:
        """Start (and leave active for Ultralytics' callback) the MLflow run."""
        try:
            mlflow = _client()
            with _store_lock(tracking_uri()):  # runs starting at once: one creates the experiment, the others use it
                _use_experiment(mlflow)
            parent = os.environ.get(PARENT_ENV)
            tags = {**(tags or {}), **({"mlflow.parentRunId": parent} if parent else {})}
            self.run_id = mlflow.start_run(run_name=self.name, tags={k: str(v) for k, v in tags.items()}).info.run_id
            self.ok = True
        except Exception as e:  # server down, store locked, bad URI: never stop training for it
            _warn_once("starting the run", e)
            with contextlib.suppress(Exception):
                _client().end_run(status="FAILED")
        return self

    def finish(self, run_dir: Path, row: dict, record: dict, evaluation=None, status: str = "FINISHED") -> None:
        """Log the provenance, the run's comparison row and best.pt's test evaluation; end the run."""
        if not self.ok:
            return
        try:
            mlflow = _client()
            active = mlflow.active_run()
            still_ours = active is not None and active.info.run_id == self.run_id  # Ultralytics leaves it open
            with contextlib.nullcontext() if still_ours else mlflow.start_run(run_id=self.run_id):
                mlflow.log_params({f"fmnist.{k}": _short(v) for k, v in _flat(record).items()})
                mlflow.set_tags({f"fmnist.{k}": _short(row.get(k)) for k in ROW_TAGS if row.get(k) is not None})
                mlflow.log_metrics({k: float(row[k]) for k in ROW_METRICS if _loggable_number(row.get(k))})
                if evaluation is not None:
                    import tempfile

                    with tempfile.TemporaryDirectory() as tmp:
                        for f in evaluation.to_csv(tmp):
                            mlflow.log_artifact(str(f), artifact_path="test")
                mlflow.log_artifact(str(paths(run_dir).provenance))
            mlflow.end_run(status=status)
        except Exception as e:
            _warn_once("logging the run's results", e)
            with contextlib.suppress(Exception):
                _client().end_run(status="FAILED")

    def finish_search(self, results: Path, best: Path, best_val_top1: float) -> None:
        """A search's parent run: its table and best configuration as artifacts, the best val top-1 as a metric."""
        if not self.ok:
            return
        try:
            mlflow = _client()
            with mlflow.start_run(run_id=self.run_id):
                mlflow.log_metric("best_val_top1", best_val_top1)
                for f in (results, best):
                    mlflow.log_artifact(str(f))
        except Exception as e:
            _warn_once("logging the search", e)

    def fail(self) -> None:
        """End the run as FAILED."""
        if self.ok:
            with contextlib.suppress(Exception):
                _client().end_run(status="FAILED")


def end_active() -> None:
    """End this process's active MLflow run, if any (keeping its status FINISHED)."""
    with contextlib.suppress(Exception):
        _client().end_run()


def log_report(run_id: str, report: Path) -> None:
    """Add report.md and its figures to a finished run's MLflow run."""
    try:
        mlflow = _client()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(report), artifact_path="report")
            mlflow.log_artifacts(str(report.parent / "report"), artifact_path="report/report")
    except Exception as e:
        _warn_once("logging the report", e)


def runs_table():
    """The comparison rows fmnist-yolo logged to MLflow (one per run, compare()'s columns), newest first."""
    import pandas as pd

    mlflow = _client()
    found = mlflow.search_runs(experiment_names=[experiment_name()], output_format="pandas")
    rows = []
    for _, r in found.iterrows():
        if pd.isna(r.get("tags.fmnist.path")):
            continue  # not logged by fmnist-yolo (or a run still going)
        row = {k: r.get(f"tags.fmnist.{k}") for k in ROW_TAGS}
        row.update({k: r.get(f"metrics.{k}") for k in ROW_METRICS})
        row["mlflow_run_id"] = r["run_id"]
        rows.append(row)
    return pd.DataFrame(rows)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        elif not isinstance(v, list):
            out[key] = v
    return out


def _short(v) -> str:
    return str(v)[:500]  # MLflow's limit for a parameter value (6000 in newer stores; 500 everywhere)


def _loggable_number(v) -> bool:
    """A number MLflow can log as a metric: not a bool, not NaN."""
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
