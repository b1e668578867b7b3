"""Train with Ultralytics on the prepared tree, evaluate best.pt once on test, and keep the provenance record.

train() resolves the arguments (args.py) and the weights (weights.py), hands Ultralytics its own trainer or the
fast one (stock_trainer.py, fast/), and writes the run directory's record through its one writer (rundir.Recorder):
at the start (status running), after each epoch (progress, expected end), at the end (finished, with val and test
metrics), or when it fails before its first epoch (failed). resume= continues an interrupted run from its last.pt.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import compat
from ..checkpoints import load_checkpoint, warn_if_untrusted
from ..config import DEFAULTS, OWN_TRAIN_KEYS, RUNS_DIR
from ..errors import ConfigError, FmnistError, RunError, warn
from ..files import atomic_path
from ..rundir import Provenance, Recorder, best_epoch, load_history, paths, read_provenance, trained_imgsz
from ..version import __version__
from .args import check_keys, devices, recipe_path, resolve_args, settle_loader, valid_keys
from .environment import environment, file_sha256
from .weights import Weights, starting_weights

log = logging.getLogger(__name__)
IMGSZ_NOTE = "Ultralytics rounds imgsz up to a multiple of the model stride (32)"
ETA_RECENT = 3  # the expected end uses the mean pace of the last 3 epochs past warm-up (else of any)
CPU_HINT_S = 3600  # a CPU run planned for longer than an hour names the faster `cpu` recipe


@dataclass
class Run:
    """A training run: its directory, its provenance record, and best.pt's evaluation on test (or None)."""

    dir: Path
    record: Provenance
    test: Any = None  # evaluation.Evaluation of best.pt on test

    @property
    def provenance(self) -> dict:
        """fmnist_yolo.json as a dict."""
        return self.record.to_dict()

    @property
    def val(self) -> dict:
        """best.pt's val top-1 and top-5, as the trainer measured them."""
        return self.record.metrics.get("val", {})

    @property
    def weights(self) -> Path:
        """best.pt: the epoch selected on val."""
        return paths(self.dir).best

    @property
    def history(self):
        """results.csv as a DataFrame, one row per epoch (fmnist_yolo.load_history)."""
        return load_history(self.dir)

    def result_line(self) -> str:
        """One line: where the run is, val top-1, test top-1 (or why there is none), wall time."""
        test = self.record.test
        tested = f"test top-1 {test['top1']:.4f}" if test else "test not evaluated (evaluate_test=False)"
        chosen = self.record.data.get("model_selection_split", "val")
        return (f"Run {self.dir}: val top-1 {self.val.get('top1', float('nan')):.4f}, {tested} (best.pt chosen on "
                f"{'val' if chosen == 'val' else 'TEST'}), {self.record.wall_time_s:.0f}s")  # fmt: skip

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        """A finished run from its directory: provenance, and the test evaluation of best.pt (the stored one when
        current, which needs no model, so a run whose weights were pruned keeps it; else evaluated once and stored;
        None for a run with neither)."""
        from ..evaluation.evaluate import best_on_test, stored_test

        d = Path(run_dir)
        if not d.is_dir():
            raise RunError(f"{d}: run directory not found")
        record = read_provenance(d)
        if record is None:
            raise RunError(f"{d}: no fmnist_yolo.json (not a finished fmnist-yolo run; `fmnist-yolo report {d}` "
                           "reads any Ultralytics run)")  # fmt: skip
        if record.status == "running":
            raise RunError(f"{d}: training has not finished (resume it with `fmnist-yolo train resume={d}`)")
        if record.status == "failed":
            raise RunError(f"{d}: training failed before its first epoch ended ({record.error})")
        if not paths(d).best.is_file():  # pruned weights: the stored predictions, if any (never last.pt's)
            return cls(d, record, stored_test(d))
        return cls(d, record, best_on_test(d, last_if_no_best=False))


def versions() -> dict[str, str]:
    """Versions of what a run depends on."""
    from importlib.metadata import version

    import torch
    import ultralytics

    return {"fmnist_yolo": __version__, "ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "pandas": version("pandas"), "python": platform.python_version()}  # fmt: skip


def project_dir(project: str | Path | None) -> str:
    """Where runs go: this project's runs/classify (a relative project= below it, as Ultralytics nests it), never
    the runs_dir of Ultralytics' per-user settings, which may be another checkout's."""
    if project is not None and Path(project).is_absolute():
        return str(project)
    base = (RUNS_DIR / "classify").absolute()
    return str(base / project if project else base)


def new_record(
    args: dict, tree: Path, weights: Weights, requested: dict, recipe: str | None, model_requested: str | None = None
) -> Provenance:
    """The provenance record of a run about to start (a fresh one, or a plain Ultralytics run being resumed)."""
    from ..data.tree import identity, manifest_checksum, val_split

    has_val = val_split(tree) is not None
    select_on = args.get("select_on", DEFAULTS.select_on)
    return Provenance(
        status="running",
        args={**args, "model": weights.model, "data": str(tree)},
        recipe={"name": recipe, "file": str(recipe_path(recipe).resolve())} if recipe else {},
        requested=dict(requested),
        imgsz={"requested": args.get("imgsz"), "effective": None, "note": IMGSZ_NOTE},
        model={"requested": model_requested or weights.model, "used": weights.model,
               "pretrained": weights.pretrained, "source": weights.source, "tried": weights.tried,
               "sha256": file_sha256(weights.model) if weights.pretrained else None},
        data={"tree": str(tree), "manifest_sha256": manifest_checksum(tree), "prepared": identity(tree),
              "has_val": has_val, "model_selection_split": "val" if has_val else "test",
              "model_selection_metric": select_on},
    )  # fmt: skip


def train(callbacks: dict[str, Any] | None = None, **overrides: Any) -> Run:
    """Train the Fashion-MNIST recipe; any Ultralytics train argument can be overridden.

    Defaults: the `default` recipe (training/recipes/default.yaml, Ultralytics' own) on the prepared tree. Also accepts
    recipe=NAME, cfg=FILE.yaml (arguments from a file), fast=False (Ultralytics' stock loader; unset, the in-memory
    fast path trains wherever it serves; fused_bn=True normalises its fused chunks as one batch), select_on="top1"
    (choose best.pt on val top-1 alone), evaluate_test=False, strict_weights=True (no from-scratch fallback) and
    resume=RUN_DIR (continue an interrupted run from its last.pt to the planned epochs).

    Args:
        callbacks: extra Ultralytics callbacks, event name -> function(trainer), e.g. {"on_fit_epoch_end": f}.

    Returns:
        A Run: its directory, val metrics of best.pt (chosen on val), and its one evaluation on test.
    """
    from ultralytics import YOLO

    from ..data.prepare import ensure_tree
    from ..data.tree import check_counts, val_split

    if callbacks is not None and not (isinstance(callbacks, dict) and all(map(callable, callbacks.values()))):
        raise ConfigError("callbacks must map Ultralytics event names to functions (Python API only)")
    if overrides.get("resume") not in (None, False):
        return _resume(overrides.pop("resume"), overrides, callbacks)
    args = resolve_args(overrides)
    args.pop("resume", None)
    tree = ensure_tree(args.pop("data"))
    check_counts(tree)
    settle_loader(args, tree)
    if val_split(tree) is None:
        warn(
            f"{tree} has no val/ split, so Ultralytics selects best.pt on test/: the test score is then not an "
            "unbiased estimate. Prepare with the default val_size to keep test for the final evaluation."
        )
    model_requested = str(args.pop("model"))
    weights = starting_weights(model_requested, bool(args["strict_weights"]))
    args["project"] = project_dir(args.get("project"))
    recipe = args.pop("recipe")
    record = new_record(args, tree, weights, overrides, recipe, model_requested)
    model = YOLO(weights.model)
    for event, function in (callbacks or {}).items():
        model.add_callback(event, function)
    ultralytics_args = {k: v for k, v in args.items() if k not in OWN_TRAIN_KEYS}
    return _run(model, Recorder(record), tree, {**ultralytics_args, "data": str(tree)})


def expected_end(done: int, planned: int, paces: list[tuple[int, float]], device: str, recipe: str | None,
                 warm: int = 0, now: float | None = None) -> tuple[dict, str | None]:  # fmt: skip
    """When the whole run should end, at the pace of its recent epochs: (the record's `eta`, the line to say or None).

    Ultralytics shows each epoch's progress, never the whole run's. `paces` are this process's (epoch index, seconds);
    epochs before `warm` ramp up the learning rate and the images per optimizer step, so they are slower (the `cpu`
    recipe's first epoch took 176 s against 46 s for its fourth): the pace counts them only until a later epoch ends.
    The line is said after this process's first epoch, and once more after the first epoch past warm-up, at the pace
    the rest of the run will go. On a CPU, a run planned for more than CPU_HINT_S names the faster recipe.
    """
    now = time.time() if now is None else now
    steady = [t for epoch, t in paces if epoch >= warm]
    recent = (steady or [t for _, t in paces])[-ETA_RECENT:]
    pace = sum(recent) / len(recent)
    left = max(planned - done, 0)
    remaining = left * pace
    ends = time.localtime(now + remaining)
    same_day = time.strftime("%Y-%m-%d", ends) == time.strftime("%Y-%m-%d", time.localtime(now))
    clock = time.strftime("%H:%M" if same_day else "%a %H:%M", ends)
    eta = {"after_epoch": done, "epoch_s": round(pace, 1), "remaining_s": round(remaining),
           "ends_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", ends)}  # fmt: skip
    first, revised = len(paces) == 1, len(steady) == 1 and len(paces) > 1
    if left == 0 or not (first or revised):
        return eta, None
    line = (f"Expected end of the run{' after warm-up' * revised}: {left} epoch{'s' * (left != 1)} left at "
            f"{pace:.0f} s each, {_duration(remaining)} more, at about {clock}")  # fmt: skip
    if first and not steady and warm + 1 < planned:  # the revised line comes before the run ends
        line += f" (warm-up's epochs are slower: revised after epoch {warm + 1})"
    if device == "cpu" and planned * pace > CPU_HINT_S and recipe != "cpu":
        line += "; on a CPU, recipe=cpu (make train RECIPE=cpu) trains this model in fewer, larger steps"
    return eta, line


def warmup_epochs(trainer) -> int:
    """How many epochs ramp the learning rate up: stock's warm-up iterations over whole epochs (Ultralytics caps
    warmup_epochs at epochs - 1, BaseTrainer._get_warmup_iterations)."""
    w = min(float(trainer.args.warmup_epochs), max(int(trainer.epochs) - 1, 0))
    return math.ceil(w) if w > 0 else 0


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _run(model, recorder: Recorder, tree: Path, train_args: dict, start_fields: dict | None = None) -> Run:
    """Train (or resume), evaluate best.pt once on test, and keep `fmnist_yolo.json` current throughout, through its
    recorder alone (`start_fields`: what the caller adds to the record when training starts, e.g. a resume)."""
    from ..evaluation.evaluate import BEST, evaluate

    record = recorder.record
    t0 = time.time()
    previous_wall = record.wall_time_s

    fields = dict(start_fields or {})

    def on_start(trainer) -> None:  # written at the start too: an interrupted run can be resumed with its history
        recorder.start(trainer.save_dir, **fields, **_trainer_fields(record, trainer))

    paces: list[tuple[int, float]] = []  # this process's epochs and their times: the expected end's pace

    def on_epoch_end(trainer) -> None:  # a killed run keeps its wall time (a resume adds to it) and progress
        done = int(trainer.epoch) + 1
        progress = {"wall_time_s": round(previous_wall + time.time() - t0, 2), "epochs_completed": done}
        if trainer.epoch < trainer.epochs and trainer.epoch_time:  # not the final evaluation's (epoch N + 1)
            paces.append((int(trainer.epoch), float(trainer.epoch_time)))
            progress["eta"], line = expected_end(done, int(trainer.epochs), paces, str(trainer.device),
                                                 (record.recipe or {}).get("name"), warmup_epochs(trainer))  # fmt: skip
            if line:
                log.info(line)
        recorder.epoch(**progress)

    model.add_callback("on_train_start", on_start)
    model.add_callback("on_fit_epoch_end", on_epoch_end)
    model.add_callback("on_model_save", _keep_safe_copy)
    a = record.args
    trainer_class = _trainer(bool(a.get("fast")), a.get("select_on", DEFAULTS.select_on), bool(a.get("fused_bn")))
    tracker = _start_tracking(record, train_args, fields)
    try:
        with compat.training(), compat.stock_mlflow(a.get("mlflow") is not False):  # mlflow=False: no MLflow at all
            model.train(**train_args, trainer=trainer_class)
    except FmnistError as e:
        recorder.fail(str(e), _planned_dir(model))
        tracker and tracker.fail()
        raise
    except (FileNotFoundError, ValueError, TypeError, SyntaxError, AssertionError, RuntimeError) as e:
        message = f"training failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        recorder.fail(message, _planned_dir(model))
        tracker and tracker.fail()
        raise FmnistError(message) from None
    except BaseException:  # Ctrl-C, a kill: the run can be resumed; its MLflow run ends as killed
        tracker and tracker.fail()
        raise
    wall = time.time() - t0
    trainer = model.trainer
    run_dir = Path(trainer.save_dir)
    history = load_history(run_dir)
    if trainer.metrics:  # in the process that trained
        metrics = trainer.metrics
        val = {"top1": float(metrics.get("metrics/accuracy_top1", float("nan"))),
               "top5": float(metrics.get("metrics/accuracy_top5", float("nan")))}  # fmt: skip
    else:  # the parent of DDP workers trained nothing itself: read what they wrote
        best = best_epoch(history, a.get("select_on", DEFAULTS.select_on))
        val = {"top1": float(history.loc[best, "val_top1"]), "top5": float(history.loc[best, "val_top5"])}
    test = None
    if a.get("evaluate_test", DEFAULTS.evaluate_test):
        # The resolved batch: `batch=-1` (AutoBatch) or a memory fraction is not a size the validator takes.
        test = evaluate(paths(run_dir).best, "test", tree, device=_evaluation_device(train_args.get("device")),
                        batch=int(trainer.batch_size))  # fmt: skip
        test.save(paths(run_dir).test_predictions, weights=BEST)  # relative: the run may be moved
    recorder.finish(
        at=run_dir,  # the parent of DDP workers never ran on_train_start: it learns the directory here
        **fields,
        **_trainer_fields(record, trainer),
        epochs_completed=int(history["epoch"].max()) if len(history) else 0,
        wall_time_s=round(previous_wall + wall, 2),
        metrics={"val": val, "test": test.headline_figures() if test else None},
        test_predictions=paths(run_dir).test_predictions.name if test else None,
    )
    if tracker:
        from ..rundir import recorded_row

        tracker.finish(run_dir, {**recorded_row(run_dir), "name": run_dir.name}, record.to_dict(), test)
    run = Run(run_dir, record, test)
    # Marked as the result: `fmnist-yolo train` prints it on stdout, so its stderr handler leaves this record out.
    log.info(run.result_line(), extra={"result": True})
    return run


def _start_tracking(record: Provenance, train_args: dict, fields: dict):
    """The run's MLflow run, started before Ultralytics' callback looks for one (None when not tracking); where it is
    goes into `fields`, which the record takes when training starts."""
    from .. import tracking

    if not tracking.enabled(record.args.get("mlflow")):
        return None
    tracker = tracking.Tracker(str(train_args.get("name") or "train")).start(
        {"fmnist.recipe": (record.recipe or {}).get("name"), "fmnist.pretrained": record.model.get("pretrained"),
         "fmnist.fast": bool(record.args.get("fast")), "fmnist.manifest_sha256": record.data.get("manifest_sha256")}
    )  # fmt: skip
    if tracker.ok:
        fields["tracking"] = {"mlflow": {"uri": tracking.tracking_uri(), "experiment": tracking.experiment_name(),
                                         "run_id": tracker.run_id}}  # fmt: skip
    return tracker


def _evaluation_device(device):
    """The device for the final test evaluation: the first of a multi-GPU list (one process evaluates)."""
    named = devices(device)
    return named[0] if named else None


def _planned_dir(model) -> Path | None:
    """The run directory Ultralytics made before failing, if it got that far."""
    trainer = getattr(model, "trainer", None)
    return Path(trainer.save_dir) if trainer is not None and getattr(trainer, "save_dir", None) else None


def _trainer(fast: bool, select_on: str, fused_bn: bool = DEFAULTS.fused_bn):
    """What Ultralytics instantiates: its ClassificationTrainer with our selection rule, or the in-memory one."""
    from functools import partial

    if fast:
        from .fast import MemoryTrainer

        return partial(MemoryTrainer, select_on=select_on, fused_bn=fused_bn)
    from .stock_trainer import Trainer

    return partial(Trainer, select_on=select_on)


def _trainer_fields(record: Provenance, trainer) -> dict:
    """Facts only the running trainer knows: effective imgsz, parameters, device, processes, seeds and threads.

    The parent of DDP workers never builds the model (its trainer.model is the model's name): its imgsz is the
    requested one rounded up to the stride, as the workers train it, and the parameters are counted in best.pt.
    """
    imgsz, model = int(trainer.args.imgsz), dict(record.model)
    if hasattr(trainer.model, "parameters"):
        effective = imgsz
        model["parameters"] = sum(p.numel() for p in trainer.model.parameters())
    else:
        effective = trained_imgsz(imgsz)
        best = paths(trainer.save_dir).best
        if best.is_file():
            net = load_checkpoint(best).get("model")
            model["parameters"] = sum(p.numel() for p in net.parameters()) if net is not None else None
    fields = {"imgsz": {**record.imgsz, "effective": effective}, "model": model, "device": str(trainer.device),
              "amp": bool(getattr(trainer, "amp", False)), "world_size": int(getattr(trainer, "world_size", 1)),
              "epochs_planned": int(trainer.epochs), "run_dir": str(trainer.save_dir), "versions": versions(),
              "environment": environment(trainer)}  # fmt: skip
    if getattr(trainer, "precision", None):
        fields["precision"] = trainer.precision
    return fields


def _keep_safe_copy(trainer) -> None:
    """After each checkpoint save: a copy of last.pt that a kill during the next save cannot truncate."""
    last = Path(trainer.last)
    if last.is_file():
        with atomic_path(paths(last.parent.parent).safe_last) as tmp:
            shutil.copyfile(last, tmp)


def _resumable(path: Path) -> dict | None:
    """The checkpoint dict when `path` loads; None when it is damaged or unreadable."""
    try:
        return load_checkpoint(path)
    except RunError:
        return None


def resume_checkpoint(target: str | Path | bool) -> tuple[Path, Path, dict]:
    """(run dir, checkpoint, its contents) to resume: RUN_DIR, RUN_DIR/weights/last.pt, or True (latest run)."""
    if target is True:
        from ultralytics.utils.files import get_latest_run

        target = get_latest_run(str(RUNS_DIR)) or ""
        if not target:
            raise ConfigError(f"resume=True: no last.pt under {RUNS_DIR}/; pass resume=RUN_DIR")
    p = Path(str(target))
    last = paths(p).last if p.is_dir() else p
    run_dir = last.parent.parent
    if not p.exists():
        raise RunError(f"{p}: run directory not found")
    if not last.is_file():
        raise RunError(f"{last}: no checkpoint to resume from (interrupted before the first epoch ended?)")
    warn_if_untrusted(last)
    ckpt = _resumable(last)
    if ckpt is None:
        safe = paths(run_dir).safe_last
        ckpt = _resumable(safe) if safe.is_file() else None
        if ckpt is None:
            raise RunError(f"{last}: damaged checkpoint (killed while saving?) and no usable {safe.name} beside it")
        warn(f"{last} is damaged (killed while saving?); resuming from {safe}, one epoch earlier.")
        shutil.copyfile(safe, last)
    if ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0:
        raise RunError(f"{last}: training already finished (no optimizer state); nothing to resume")
    if not isinstance(ckpt.get("train_args"), dict) or "data" not in ckpt["train_args"]:
        raise RunError(f"{last}: no train_args in the checkpoint (not saved by Ultralytics' trainer)")
    return run_dir, last, ckpt


def _resume(target: str | Path | bool, overrides: dict[str, Any], callbacks: dict | None = None) -> Run:
    """Continue an interrupted run from its last.pt to the planned epochs, recording the resume."""
    from ultralytics import YOLO

    from ..data.prepare import ensure_tree
    from ..data.tree import manifest_checksum

    check_keys(overrides, valid_keys())
    if own := [k for k in OWN_TRAIN_KEYS if k in overrides]:  # Ultralytics would take them as unknown: a failed run
        raise ConfigError(f"{own[0]}= cannot be given with resume=: a run resumes with the loader, recipe and choices "
                          "it was recorded with (train afresh to change them)")  # fmt: skip
    run_dir, last, ckpt = resume_checkpoint(target)
    train_args = ckpt["train_args"]
    tree = ensure_tree(overrides.pop("data", None) or train_args["data"])
    recorder = Recorder.open(run_dir)
    if recorder is None:  # a plain Ultralytics run, or one interrupted before its first epoch began
        model = str(train_args.get("model", ""))
        weights = Weights(model, model.endswith(".pt"), "from the checkpoint's train_args (not started by fmnist-yolo)")
        recorder = Recorder(new_record(dict(train_args), tree, weights, {}, None), run_dir)
    record = recorder.record
    if record.data.get("manifest_sha256") not in (None, manifest_checksum(tree)):
        warn(f"{tree} changed since this run started (manifest differs); resuming on it anyway.")
    resumed = [*record.resumed, {  # written with status running when training starts again
        "checkpoint": str(last), "completed_epochs": int(ckpt["epoch"]) + 1, "planned_epochs": train_args["epochs"],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": overrides,
    }]  # fmt: skip
    log.info(f"Resuming {run_dir} after epoch {int(ckpt['epoch']) + 1} of {train_args['epochs']}")
    model = YOLO(str(last))
    for event, function in (callbacks or {}).items():
        model.add_callback(event, function)
    return _run(model, recorder, tree, {**overrides, "resume": True, "data": str(tree)}, {"resumed": resumed})
