"""Hyperparameter search on Ray Tune: each trial is one `fmnist_yolo.train`, ASHA stops weak ones early on val top-1."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .. import compat
from ..config import DEFAULTS, OWN_TRAIN_KEYS, check_options, default, options
from ..errors import ConfigError, DataError, FmnistError, warn
from ..files import write_text
from ..rundir import Recorder, load_history

METRIC = "metrics/accuracy_top1"  # what Ultralytics reports to Ray Tune each epoch: val top-1
TUNE_TABLE = "tune_results.csv"
BEST_CONFIG = "best_hyperparameters.yaml"
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
TUNE_KEYS = set(options("tune")) - set(OWN_TRAIN_KEYS) - {"name"}  # tune's own keys (name= is Ultralytics')
DATA_ENV = "FMNIST_YOLO_DATA"  # on a node of a cluster: the directory holding that node's trees (its datasets/)


def _ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise FmnistError(INSTALL) from None
    return ray, tune


FAST_NO_OP = ("auto_augment",)  # keys whose sampled values the fast loader does not all apply (not AugMix, AutoAugment)


def loader_and_space(space: dict | str | Path | None, args: dict[str, Any], tree: Path | None = None
                     ) -> tuple[bool, dict]:  # fmt: skip
    """(fast, the search space): the loader train's rule chooses (choose_loader), unless fast= was left unset and the
    space samples what the fast path does not apply: then the stock loader. Either way, one line says why where the
    loader is stock without fast=False."""
    from .args import choose_loader, warn_stock

    fast, why = choose_loader(args, tree)
    try:
        chosen = search_space(space, fast=fast)
    except ConfigError:
        if args.get("fast") is not None or args.get("fused_bn") or not fast:
            raise
        chosen = search_space(space, fast=False)  # any other fault of the space is raised again here
        fast, why = False, f"the search space samples {', '.join(FAST_NO_OP)}, which the fast path does not apply"
    if why:
        warn_stock(why)
    return fast, chosen


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


def _yaml_number(v):
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
        return kind, [_yaml_number(v) for v in rest[0]]
    if kind not in ("uniform", "loguniform", "randint"):
        raise ConfigError(f"{name}: unknown kind '{kind}' (uniform, loguniform, randint, choice, grid)")
    bounds = [_yaml_number(v) for v in rest]
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


def _trial(
    config: dict, base: dict, parent: str | None = None, tree: dict | None = None, tracking: dict | None = None
) -> None:
    """One trial, in a Ray worker: a normal fmnist-yolo run that reports val metrics after each epoch but the last,
    and a summary once it has finished (so that the table needs nothing from this node's disk)."""
    from ray import tune

    from ..tracking import PARENT_ENV
    from .train import train

    if parent:
        os.environ[PARENT_ENV] = parent  # the trial's MLflow run nests under the search's
        os.environ.update(tracking or {})  # in the search's store: this node's environment may name another
    data = node_tree(base["data"], tree) if tree else base["data"]

    compat.drop_stock_raytune_reporter()  # it would report best.pt's final evaluation as one more epoch
    best = []

    def report(trainer) -> None:
        # Not the last epoch: a scheduler decision there could only kill a finished trial before its final
        # validation and provenance; the summary below reports it. Nor the final evaluation of best.pt.
        best.append(trainer.metrics.get(METRIC, float("nan")))
        if trainer.epoch + 1 < trainer.epochs:
            tune.report({**trainer.metrics, "epoch": trainer.epoch + 1, "best_val_top1": max(best)})

    trial = tune.get_context().get_trial_id()
    run = train(**{**base, "data": data}, **config, name=f"trial_{trial}", evaluate_test=False, exist_ok=True,
                callbacks={"on_fit_epoch_end": report})  # fmt: skip
    history = load_history(run.dir)
    tune.report({METRIC: float(history["val_top1"].iloc[-1]), "best_val_top1": float(history["val_top1"].max()),
                 "epoch": int(history["epoch"].max()), "finished": 1})  # fmt: skip


def node_tree(tree: str, want: dict) -> str:
    """The search's tree on this node: $FMNIST_YOLO_DATA/<its name> when set, else the driver's own path; prepared
    there when missing, from this node's sources by the driver's options, and used only when what it holds (its
    content checksum) is what the driver's holds: a node whose tree differs refuses, in one line."""
    from ..data.prepare import prepare
    from ..data.sources import resolve_source
    from ..data.tree import content_checksum

    root = os.environ.get(DATA_ENV)
    local = Path(root).absolute() / Path(tree).name if root else Path(tree)
    found, prepared = content_checksum(local), ""
    if found is None:
        if local.exists():
            raise DataError(f"{_node()}: {local} is not a prepared tree (no readable manifest.json); move it away "
                            "and a trial here prepares it")  # fmt: skip
        # The same rules as `prepare` ($FMNIST_SOURCE, the raw dir beside the tree, Debian's package, a download)
        source = resolve_source(None, raw_dir=local.parent / DEFAULTS.raw_dir.relative_to(DEFAULTS.out.parent))
        prepare(source=source.dir, out=local, val_size=want["val_size"], split_seed=want["split_seed"],
                verify=want["verify"], workers=want["workers"], progress=False, link=False)  # fmt: skip
        found, prepared = content_checksum(local), f" (prepared here from {source.dir}, {source.origin})"
    if found != want["checksum"]:
        raise DataError(f"{_node()}: {local}{prepared} holds tree {found[:16]}, the search's is "
                        f"{want['checksum'][:16]} ({tree} on the driver); move it away (a trial here then prepares "
                        f"it) or set {DATA_ENV} elsewhere")  # fmt: skip
    return str(local)


def _node() -> str:
    """This Ray node, for messages: host, IP and node id."""
    import socket

    import ray

    if not ray.is_initialized():  # not in a Ray worker
        return f"node {socket.gethostname()}"
    node_id = ray.get_runtime_context().get_node_id()
    return f"node {socket.gethostname()} {ray.util.get_node_ip_address()} ({node_id[:12]})"


def tune(**kwargs: Any) -> pd.DataFrame:
    """Search hyperparameters with Ray Tune (ASHA on val top-1); every other argument is a train argument.

    Args (their defaults and ranges: `fmnist-yolo tune --help`, declared in fmnist_yolo.config.OPTIONS):
        iterations: trials. grace_period: epochs before ASHA may stop a trial.
        address: an existing Ray cluster to join ("auto" or "ray://host:10001"); default a local Ray.
        gpu_per_trial / cpu_per_trial: resources per trial (cpu_per_trial 0: the CPUs of the smallest node, locally
            all cores).
        space: a YAML file or dict replacing the default search space (fmnist_yolo.training.tune.SPACE).
        project / name: where the search's directory goes (default runs/classify/tune).

    Returns:
        One row per trial (its hyperparameters, best val top-1, epochs run, status, node, run dir), best first; also
        written as RUN_DIR/tune_results.csv, with the best configuration as RUN_DIR/best_hyperparameters.yaml.
    """
    from ..data.prepare import ensure_tree
    from ..data.tree import content_checksum, prepare_args, read_manifest
    from .args import check_keys, device_count, resolve_args, valid_keys
    from .train import project_dir

    ray, rt = _ray()
    check_keys(kwargs, valid_keys() | TUNE_KEYS)
    check_options("tune", kwargs)
    iterations = int(kwargs.pop("iterations", DEFAULTS.iterations))
    grace = int(kwargs.pop("grace_period", DEFAULTS.grace_period))
    address = kwargs.pop("address", default("tune", "address"))
    gpus = float(kwargs.pop("gpu_per_trial", DEFAULTS.gpu_per_trial))
    cpus = float(kwargs.pop("cpu_per_trial", DEFAULTS.cpu_per_trial))  # 0: decided once the cluster's nodes are known
    space_spec = kwargs.pop("space", default("tune", "space"))
    project = Path(project_dir(kwargs.pop("project", None)))  # as train resolves it
    name = kwargs.pop("name", None) or default("tune", "name")
    resolved = resolve_args(kwargs)  # validates everything up front, in this process, with clear errors
    if device_count(resolved.get("device")) > 1:  # before the loader's choice, which would say DDP trains with stock's
        raise ConfigError("tune: one device per trial (gpu_per_trial=1); drop the multi-GPU device= list")
    search_space(space_spec)  # the space's own faults, before the tree (which may prepare the data)
    tree = ensure_tree(resolved["data"])
    resolved["fast"], space = loader_and_space(space_spec, resolved, tree)
    kwargs["fast"] = resolved["fast"]  # decided once, here: every trial trains with this loader
    manifest = read_manifest(tree)
    # What a node's copy of the tree must hold, and how a node without one prepares it (None: the user's own tree,
    # without a manifest, used as it is at the same path on every node)
    rebuild = {"val_size": None, "split_seed": None, "verify": False, **prepare_args(manifest)}
    want = manifest and {"checksum": content_checksum(tree), **rebuild}
    out = _unique_dir(project / name, bool(kwargs.pop("exist_ok", False)))
    kwargs.pop("evaluate_test", None)  # trials never evaluate on test
    base = _absolute({**kwargs, "data": tree, "project": out / "trials"})
    epochs = int(resolved["epochs"])
    # Trials log to their run directories; the driver shows Ray's trial status table only.
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    parent = None
    try:
        cpus, gpus = _resources(ray.nodes(), cpus, gpus)
        parent = _parent_run(out.name, resolved, address)
        if parent is None:
            base["mlflow"] = False  # an untracked search has untracked trials, whatever each node's settings say
        # ASHA decides at epochs grace, 3 grace, ... below the last; too few epochs for a rung: every trial runs out.
        scheduler = (rt.schedulers.ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace,
                                                 reduction_factor=3) if grace < epochs else None)  # fmt: skip
        trainable = rt.with_parameters(_trial, base=base, parent=parent and parent.run_id,
                                       tree=want and {**want, "workers": max(1, int(cpus))},
                                       tracking=parent and _tracking_env())  # fmt: skip
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
    write_text(out / TUNE_TABLE, table.to_csv(index=False))
    failed = table[table["status"] == "error"]
    if len(failed) and len(failed) < len(table):  # all failed: _write_best says so, as an error
        first = failed.iloc[0]
        warn(f"{len(failed)} of {len(table)} trials failed ({out / TUNE_TABLE}, status error); the first, trial "
             f"{first['trial']}: {first['error']}")  # fmt: skip
    _write_best(out / BEST_CONFIG, table, list(space), resolved, time.time() - t0)
    table.attrs["dir"] = str(out)  # the search's directory: tune_results.csv, best_hyperparameters.yaml, trials/
    if parent is not None:
        parent.finish_search(out / TUNE_TABLE, out / BEST_CONFIG, float(table["best_val_top1"].max()))
    return table


def _resources(nodes: list[dict], cpus: float, gpus: float) -> tuple[float, float]:
    """A trial's CPUs and GPUs. cpu_per_trial defaults to the CPUs of the smallest node that has any, so that every
    node takes trials (locally: all cores, one trial at a time); what no node can hold is refused here, where Ray
    would wait for such a node forever."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    cpus = cpus or min((r["CPU"] for r in alive if r.get("CPU")), default=1.0)
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in alive)
        raise ConfigError(f"cpu_per_trial={cpus:g} gpu_per_trial={gpus:g}: no node of the Ray cluster has that much "
                          f"(its nodes: {have})")  # fmt: skip
    return cpus, gpus


def _tracking_env() -> dict[str, str]:
    """The driver's MLflow store and experiment, for trials whose node's environment may say otherwise."""
    from .. import tracking

    return {"MLFLOW_TRACKING_URI": tracking.tracking_uri(), "MLFLOW_EXPERIMENT_NAME": tracking.experiment_name()}


def _parent_run(name: str, resolved: dict, address: str | None):
    """The search's own MLflow run, under which every trial's run is nested (None when not tracking)."""
    from .. import tracking

    if not tracking.enabled(resolved.get("mlflow")):
        return None
    if address and tracking.tracking_uri().startswith("sqlite:"):
        warn(f"MLflow store {tracking.tracking_uri()} is a file on this machine: trials on other nodes of the "
             "cluster log into their own copy; set MLFLOW_TRACKING_URI to a tracking server (http://...)")  # fmt: skip
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
    """One row per trial, best val top-1 first; trials ASHA stopped are marked so in their fmnist_yolo.json too.

    From each trial's results.csv where the driver sees it, else (its node's disk) from what it reported to Ray."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        trial = metrics.get("trial_id") or Path(result.path).name
        run = trials / f"trial_{trial}"
        best, epochs_run = metrics.get("best_val_top1", metrics.get(METRIC, float("nan"))), metrics.get("epoch", 0)
        if (run / "results.csv").is_file():  # every epoch, the last one included
            history = load_history(run)
            best, epochs_run = history["val_top1"].max(), history["epoch"].max()
        status = "error" if result.error else _settle(run, epochs)
        if status is None:  # its provenance is on the node that ran it
            status = "completed" if metrics.get("finished") else "stopped" if metrics else "unknown"
        rows.append({
            "trial": trial, "status": status,
            **{k: result.config.get(k) for k in keys},
            "best_val_top1": float(best), "epochs_run": int(epochs_run),
            "node": metrics.get("node_ip", ""), "run": str(run),
            "error": _error_line(result.error) if result.error else "",
        })  # fmt: skip
    table = pd.DataFrame(rows).sort_values("best_val_top1", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def _error_line(error: BaseException) -> str:
    """A failed trial's error in one line: the trial's own exception (Ray wraps it in a traceback), else Ray's."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1].strip() if lines else ''}"


def _settle(run_dir: Path, epochs: int) -> str | None:
    """'completed', or 'stopped' for a trial ASHA ended early (its provenance still says running: Ray killed it);
    None when the driver does not see its provenance (on another machine of a cluster, or never started)."""
    try:
        recorder = Recorder.open(run_dir)
    except FmnistError:
        return "unknown"  # damaged
    if recorder is None:
        return None
    if recorder.record.status == "finished":
        return "completed"
    if recorder.record.status == "running":
        recorder.stop("ASHA early stopping (fmnist-yolo tune)")
    return recorder.record.status


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
