"""Hyperparameter search on Ray Tune: each trial is one `fmnist_yolo.train`, ASHA stops weak ones early on val top-1."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import compat
from .errors import ConfigError, FmnistError
from .files import write_text
from .rundir import load_history, read_provenance, write_provenance

METRIC = "metrics/accuracy_top1"  # what Ultralytics reports to Ray Tune each epoch: val top-1
RESULTS = "tune_results.csv"
BEST = "best_hyperparameters.yaml"
INSTALL = "Ray Tune is not installed: pip install 'fmnist-yolo[tune]' (or, in a checkout, pip install -e '.[tune]')"

# (kind, low, high) or ("choice", [options]). Classification keys only: Ultralytics' default space is detection's
# (box, dfl, mosaic, ...), which does nothing here. Hue/saturation are left out: no-ops on grey images.
SPACE = {
    "lr0": ("loguniform", 1e-4, 5e-2),  # initial learning rate
    "lrf": ("uniform", 0.01, 0.5),  # final LR as a fraction of lr0
    "momentum": ("uniform", 0.8, 0.98),  # SGD momentum / Adam beta1
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    "warmup_epochs": ("uniform", 0.0, 3.0),
    "dropout": ("uniform", 0.0, 0.3),  # before the classifier
    "fliplr": ("uniform", 0.0, 0.5),  # flipud stays 0: upside-down garments are not in the data
    "erasing": ("uniform", 0.0, 0.5),  # random erasing probability
    "scale": ("uniform", 0.0, 0.6),  # random resized crop keeps 1 - scale to 100 % of the area
    "auto_augment": ("choice", ["randaugment", "autoaugment", "augmix"]),
}
EXPERIMENT_KEYS = ("recipe", "model", "imgsz", "fast", "optimizer", "batch", "cos_lr")  # kept in the best config
TUNE_KEYS = {"iterations", "grace_period", "address", "gpu_per_trial", "cpu_per_trial", "space"}


def _ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise FmnistError(INSTALL) from None
    return ray, tune


FAST_NO_OP = ("auto_augment",)  # keys whose sampled values the fast loader does not all apply (not AugMix, AutoAugment)


def search_space(space: dict | str | Path | None = None, fast: bool = False) -> dict[str, Any]:
    """Ray Tune domains from SPACE, or from a dict / YAML file of the same form (key: [kind, low, high]).

    With fast=True the default space leaves out what the fast loader ignores, and a given space may not name it.
    """
    _, tune = _ray()
    where = str(space) if isinstance(space, (str, Path)) else None
    if isinstance(space, (str, Path)):
        try:
            space = yaml.safe_load(Path(space).read_text())
        except (OSError, yaml.YAMLError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
            raise ConfigError(f"{space}: cannot read search space ({why})") from None
    spec = {k: v for k, v in SPACE.items() if not (fast and k in FAST_NO_OP)} if space is None and not where else space
    if not isinstance(spec, dict):
        raise ConfigError(f"{where or 'search space'}: not a mapping of key: [kind, ...] (found {type(spec).__name__})")
    for key in spec:
        if fast and key in FAST_NO_OP:
            raise ConfigError(
                f"search space '{key}': not searchable with fast=True (the fast loader applies "
                "randaugment only, not augmix or autoaugment)"
            )
    kinds = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
    out = {}
    for key, value in spec.items():
        kind, args = _entry(key, value, where)
        if kind == "choice":
            out[key] = tune.choice(args)
        elif kind == "grid":  # every value, in order, `iterations` times each
            out[key] = tune.grid_search(args)
        else:
            out[key] = kinds[kind](*args)
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # what YAML 1.1 leaves a string: 1e-4, 5E3


def _number(v):
    """A number as written in a space file: PyYAML (YAML 1.1) reads `1e-4` (no dot) as the string '1e-4'."""
    if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
        f = float(v)
        return int(f) if f.is_integer() and not any(c in v for c in ".eE") else f
    return v


def _entry(key: str, value, where: str | None = None) -> tuple[str, list]:
    """One space entry checked: (kind, arguments), numbers as numbers; ConfigError naming the key otherwise."""
    name = f"{where + ': ' if where else ''}search space '{key}'"
    shapes = "[uniform|loguniform|randint, low, high] or [choice|grid, [values]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}: expected {shapes}, found {value!r}")
    kind, *rest = value
    if kind in ("choice", "grid"):
        if len(rest) != 1 or not isinstance(rest[0], (list, tuple)) or not rest[0]:
            raise ConfigError(f"{name}: expected [{kind}, [values]] with at least one value, found {value!r}")
        return kind, [_number(v) for v in rest[0]]
    if kind not in ("uniform", "loguniform", "randint"):
        raise ConfigError(f"{name}: unknown kind '{kind}' (uniform, loguniform, randint, choice, grid)")
    bounds = [_number(v) for v in rest]
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        raise ConfigError(f"{name}: expected [{kind}, low, high] with two numbers, found {value!r}")
    low, high = bounds
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"{name}: randint needs whole numbers, found {value!r}")
    if not low < high or (kind == "loguniform" and low <= 0):
        need = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ConfigError(f"{name}: {kind} needs {need}, found {low!r}, {high!r}")
    return kind, bounds


def _absolute(args: dict[str, Any]) -> dict[str, Any]:
    """Trial workers run in their own directories: every path they are given must be absolute."""
    out = dict(args)
    for key in ("data", "project", "cfg", "recipe", "model"):
        value = out.get(key)
        if isinstance(value, (str, Path)) and (key in ("data", "project") or Path(value).exists()):
            out[key] = str(Path(value).absolute())
    return out


def _trial(config: dict, base: dict, report_last: bool, parent: str | None = None) -> None:
    """One trial, in a Ray worker: a normal fmnist-yolo run that reports val metrics after each epoch."""
    from ray import tune

    from .tracking import PARENT_ENV
    from .training.train import train

    if parent:
        os.environ[PARENT_ENV] = parent  # the trial's MLflow run nests under the search's

    compat.drop_stock_raytune_reporter()  # it would report best.pt's final evaluation as one more epoch

    def report(trainer) -> None:
        # Not the final evaluation of best.pt; under ASHA not the last epoch either: a scheduler decision there
        # could only kill a finished trial before its final validation and provenance (results.csv has that epoch).
        if trainer.epoch + 1 < trainer.epochs or (report_last and trainer.epoch < trainer.epochs):
            tune.report({**trainer.metrics, "epoch": trainer.epoch + 1})

    trial = tune.get_context().get_trial_id()
    train(**base, **config, name=f"trial_{trial}", evaluate_test=False, exist_ok=True,
          callbacks={"on_fit_epoch_end": report})  # fmt: skip


def tune(**kwargs: Any) -> pd.DataFrame:
    """Search hyperparameters with Ray Tune (ASHA on val top-1); every other argument is a train argument.

    Args:
        iterations: trials (default 10). grace_period: epochs before ASHA may stop a trial (default 1).
        address: an existing Ray cluster to join ("auto" or "ray://host:10001"); default a local Ray.
        gpu_per_trial / cpu_per_trial: resources per trial (default 0 GPUs, all cores).
        space: a YAML file or dict replacing the default search space (fmnist_yolo.tune.SPACE).
        project / name: where the search's directory goes (default runs/classify/tune).

    Returns:
        One row per trial (its hyperparameters, best val top-1, epochs run, status, run dir), best first; also
        written as RUN_DIR/tune_results.csv, with the best configuration as RUN_DIR/best_hyperparameters.yaml.
    """
    from .data.prepare import ensure_tree
    from .training.args import check_keys, device_count, resolve_args, valid_keys
    from .training.train import project_dir

    ray, rt = _ray()
    check_keys(kwargs, valid_keys() | TUNE_KEYS)
    iterations = int(kwargs.pop("iterations", 10))
    grace = int(kwargs.pop("grace_period", 1))
    address = kwargs.pop("address", None)
    gpus = float(kwargs.pop("gpu_per_trial", 0) or 0)
    cpus = float(kwargs.pop("cpu_per_trial", 0) or os.cpu_count() or 1)
    space_spec = kwargs.pop("space", None)
    project = Path(project_dir(kwargs.pop("project", None)))  # as train resolves it
    name = kwargs.pop("name", None) or "tune"
    resolved = resolve_args(kwargs)  # validates everything up front, in this process, with clear errors
    space = search_space(space_spec, fast=bool(resolved.get("fast")))
    if device_count(resolved.get("device")) > 1:
        raise ConfigError("tune: one device per trial (gpu_per_trial=1); drop the multi-GPU device= list")
    tree = ensure_tree(resolved["data"])
    out = _unique_dir(project / name, bool(kwargs.pop("exist_ok", False)))
    kwargs.pop("evaluate_test", None)  # trials never evaluate on test
    base = _absolute({**kwargs, "data": tree, "project": out / "trials"})
    epochs = int(resolved["epochs"])
    # Trials log to their run directories; the driver shows Ray's trial status table only.
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    parent = _parent_run(out.name, resolved)
    try:
        # ASHA decides at epochs grace, 3 grace, ... below the last; too few epochs for a rung: every trial runs out.
        asha = grace < epochs
        scheduler = (rt.schedulers.ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace,
                                                 reduction_factor=3) if asha else None)  # fmt: skip
        trainable = rt.with_parameters(_trial, base=base, report_last=not asha, parent=parent and parent.run_id)
        trainable = rt.with_resources(trainable, {"cpu": cpus, "gpu": gpus})
        tuner = rt.Tuner(
            trainable, param_space=space,
            tune_config=rt.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=iterations),
            run_config=rt.RunConfig(storage_path=str(out), name="ray", verbose=1),
        )  # fmt: skip
        grid = tuner.fit()
    finally:
        ray.shutdown()
    table = _table(grid, list(space), out / "trials", epochs)
    write_text(out / RESULTS, table.to_csv(index=False))
    _write_best(out / BEST, table, list(space), resolved, time.time() - t0)
    table.attrs["dir"] = str(out)  # the search's directory: tune_results.csv, best_hyperparameters.yaml, trials/
    if parent is not None:
        parent.finish_search(out / RESULTS, out / BEST, float(table["best_val_top1"].max()))
    return table


def _parent_run(name: str, resolved: dict):
    """The search's own MLflow run, under which every trial's run is nested (None when not tracking)."""
    from . import tracking

    if not tracking.enabled(resolved.get("mlflow")):
        return None
    parent = tracking.Tracker(name).start({"fmnist.search": "ray tune, ASHA on val top-1"})
    if parent.ok:
        tracking.end_active()  # trials start their own runs in their processes, nested by the parent tag
    return parent if parent.ok else None


def _unique_dir(path: Path, exist_ok: bool) -> Path:
    """runs/classify/tune, tune2, tune3, ... as Ultralytics names runs."""
    if exist_ok or not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}{n}").exists():
        n += 1
    return path.with_name(f"{path.name}{n}")


def _table(grid, keys: list[str], trials: Path, epochs: int) -> pd.DataFrame:
    """One row per trial, best val top-1 first; trials ASHA stopped are marked so in their fmnist_yolo.json too."""
    rows = []
    for result in grid:
        trial = (result.metrics or {}).get("trial_id") or Path(result.path).name
        status = "error" if result.error else _settle(trials / f"trial_{trial}", epochs)
        history = result.metrics_dataframe
        if (trials / f"trial_{trial}" / "results.csv").is_file():  # every epoch, the last one included
            history = load_history(trials / f"trial_{trial}").rename(columns={"val_top1": METRIC})
        has = history is not None and METRIC in history
        rows.append({
            "trial": trial, "status": status,
            **{k: result.config.get(k) for k in keys},
            "best_val_top1": float(history[METRIC].max()) if has else float("nan"),
            "epochs_run": int(history["epoch"].max()) if has else 0,
            "run": str(trials / f"trial_{trial}"),
            "error": str(result.error).splitlines()[0] if result.error else "",
        })  # fmt: skip
    table = pd.DataFrame(rows).sort_values("best_val_top1", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def _settle(run_dir: Path, epochs: int) -> str:
    """'completed', or 'stopped' for a trial ASHA ended early (its provenance still says running: Ray killed it)."""
    try:
        record = read_provenance(run_dir)
    except FmnistError:
        return "unknown"  # damaged
    if record is None:
        return "unknown"  # on another machine of a cluster, or never started
    if record.status == "finished":
        return "completed"
    if record.status == "running":
        record.status, record.stopped_by = "stopped", "ASHA early stopping (fmnist-yolo tune)"
        write_provenance(run_dir, record)
    return record.status


def _write_best(path: Path, table: pd.DataFrame, keys: list[str], resolved: dict, seconds: float) -> None:
    """The best trial's hyperparameters plus what defines the experiment (model, imgsz, ...), as a train cfg=."""
    ok = table[table["status"] != "error"].dropna(subset=["best_val_top1"])
    if ok.empty:
        raise FmnistError(f"{path.parent}: every trial failed; first error: {table['error'].iloc[0]}")
    best = ok.iloc[0]
    fixed = {k: resolved[k] for k in EXPERIMENT_KEYS if resolved.get(k) is not None}
    config = {**fixed, **{k: (v.item() if hasattr(v, "item") else v) for k, v in best[keys].items()}}
    header = (f"# Best of {len(table)} trials by val top-1 ({best['best_val_top1']:.4f}, trial {best['trial']}), "
              f"searched with epochs={resolved['epochs']}, fraction={resolved.get('fraction', 1.0)} "
              f"in {seconds:.0f}s.\n"
              f"# Train with it: fmnist-yolo train cfg={path} epochs=N\n")  # fmt: skip
    write_text(path, header + yaml.safe_dump(config, sort_keys=False))
