"""Train with Ultralytics on the prepared tree, then evaluate best.pt once on test and record provenance."""

from __future__ import annotations

import difflib
import json
import platform
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config import DEFAULTS, OWN_TRAIN_KEYS, RECIPES_DIR, TRAIN_KEYS
from .errors import ConfigError, FmnistError
from .files import atomic_path

PROVENANCE = "fmnist_yolo.json"
TEST_PREDICTIONS = "test_predictions.csv"  # best.pt's per-image test predictions, for reports without re-evaluating
WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/{}"


def valid_keys() -> set[str]:
    """Every key `train` accepts: Ultralytics' own arguments plus ours."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(DEFAULT_CFG_DICT) | OWN_TRAIN_KEYS


def check_keys(args: dict[str, Any], allowed: set[str], where: str = "argument") -> None:
    """Raise ConfigError for the first unknown key, suggesting the closest valid one."""
    for key in args:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else " (see `yolo cfg` for Ultralytics' arguments)"
            raise ConfigError(f"unknown {where} '{key}'{hint}")


def read_args_yaml(path: str | Path, allowed: set[str]) -> dict[str, Any]:
    """Train arguments from a YAML mapping, every key checked against `allowed`."""
    try:
        args = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(args, dict):
        raise ConfigError(f"{path}: expected a mapping of arguments, found {type(args).__name__}")
    check_keys(args, allowed, where=f"argument in {path}")
    return args


def recipes() -> dict[str, Path]:
    """Shipped recipes: name -> YAML file."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_path(recipe: str | Path) -> Path:
    """A shipped recipe's file by name, or a recipe YAML given by path."""
    shipped = recipes()
    if str(recipe) in shipped:
        return shipped[str(recipe)]
    if Path(recipe).suffix in (".yaml", ".yml") and Path(recipe).is_file():
        return Path(recipe)
    close = difflib.get_close_matches(str(recipe), shipped, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown recipe '{recipe}' (shipped: {', '.join(shipped)}; or a YAML path){hint}")


def resolve_args(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults < recipe < cfg= YAML < explicit overrides, validated by key and by Ultralytics' type checks."""
    from ultralytics.cfg import check_cfg

    overrides = dict(overrides)
    allowed = valid_keys()
    check_keys(overrides, allowed)
    cfg = overrides.pop("cfg", None)
    from_file = read_args_yaml(cfg, allowed - {"cfg"}) if cfg else {}
    recipe = overrides.pop("recipe", None) or from_file.pop("recipe", None) or DEFAULTS.recipe
    path = recipe_path(recipe)
    from_recipe = read_args_yaml(path, allowed - {"cfg", "recipe"})
    args = {**{k: getattr(DEFAULTS, k) for k in TRAIN_KEYS}, "data": None, **from_recipe, **from_file, **overrides}
    args["recipe"] = str(recipe)
    try:
        check_cfg({k: v for k, v in args.items() if k not in OWN_TRAIN_KEYS and v is not None})
    except (TypeError, ValueError, SyntaxError) as e:
        raise ConfigError(str(e).splitlines()[0].strip()) from None
    return args


def device_count(device: Any) -> int:
    """How many devices a `device=` value names: 0,1 / "0,1" / [0, 1] are two (Ultralytics then trains with DDP)."""
    if device is None or isinstance(device, int):
        return 1
    parts = [p for p in str(device).strip("()[] ").replace(" ", "").split(",") if p]
    return max(len(parts), 1)


def ensure_tree(data: str | Path | None) -> Path:
    """The dataset tree: the default one is prepared when missing; others must exist."""
    from .convert import prepare, read_manifest

    if data is None or Path(data).absolute() == DEFAULTS.out.absolute():
        tree = DEFAULTS.out.absolute()
        return tree if read_manifest(tree) else prepare()
    tree = Path(data)
    if not tree.is_dir():
        from ultralytics.utils import DATASETS_DIR

        if (DATASETS_DIR / tree).is_dir():  # a name, resolved the way Ultralytics does
            return (DATASETS_DIR / tree).resolve()
        raise ConfigError(f"{data}: dataset directory not found (run `fmnist-yolo prepare` or pass data=DIR)")
    return tree.absolute()


_WARNED: set[Path] = set()


def warn_if_untrusted(path: str | Path) -> None:
    """Warn once per file when a checkpoint comes from outside the project's runs/ and weights/ (or Ultralytics').

    A .pt file is a pickle: loading it can execute code, and Ultralytics loads it with weights_only=False.
    """
    from ultralytics.utils import SETTINGS

    p = Path(path).resolve()
    trusted = [Path(d).resolve() for d in ("runs", "weights", SETTINGS["runs_dir"], SETTINGS["weights_dir"])]
    if p in _WARNED or p.suffix != ".pt" or any(p.is_relative_to(d) for d in trusted):
        return
    _WARNED.add(p)
    print(f"WARNING: {p} is outside this project's runs/ and weights/. PyTorch checkpoints are pickles and can run "
          "code when loaded: load only files you trust.", file=sys.stderr)  # fmt: skip


@dataclass
class Weights:
    """Where the model comes from."""

    model: str  # what YOLO() is given
    pretrained: bool
    source: str  # a sentence for the provenance
    tried: list[str] = field(default_factory=list)


def resolve_weights(model: str, strict: bool = False) -> Weights:
    """A path, a name found locally (./weights, Ultralytics' weights_dir) or downloaded; else the YAML.

    Offline without the file, warn once and train the same architecture from scratch, unless `strict`.
    """
    from ultralytics.utils import SETTINGS

    p = Path(str(model))
    if p.suffix in (".yaml", ".yml"):
        return Weights(str(model), False, f"architecture {p.name}, random initialisation")
    if p.is_file():
        warn_if_untrusted(p)
        return Weights(str(p), True, f"weights file {p.resolve()}")
    if p.suffix != ".pt":
        raise ConfigError(f"{model}: model must be a .pt weights file or a .yaml architecture")
    if len(p.parts) > 1:
        raise ConfigError(f"{model}: model file not found")
    tried = []
    for d in (Path("weights"), Path(SETTINGS["weights_dir"])):
        candidate = d / p.name
        tried.append(str(candidate.absolute()))
        if candidate.is_file():
            return Weights(str(candidate), True, f"weights file {candidate.resolve()}", tried)
    url = WEIGHTS_URL.format(p.name)
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        got = Path(attempt_download_asset(Path("weights") / p.name))
        if got.is_file():
            return Weights(str(got), True, f"downloaded {url}", tried)
        tried.append(f"download of {url} (no such asset)")
    except Exception as e:  # offline, DNS, HTTP: Ultralytics raises ConnectionError and others
        tried.append(f"download of {url} ({type(e).__name__})")
    if strict:
        raise FmnistError(f"{model}: pretrained weights not available (tried {'; '.join(tried)})")
    arch = p.with_suffix(".yaml").name
    print(
        f"WARNING: pretrained {p.name} is not available (tried {'; '.join(tried)}). Training {arch} from scratch "
        f"(recorded as pretrained: false). To fine-tune instead, put {p.name} in weights/ (from {url}) or pass "
        f"model=/path/to/{p.name}; strict_weights=True makes this an error.",
        file=sys.stderr,
    )
    return Weights(arch, False, f"{arch} from scratch: {p.name} unavailable", tried)


@dataclass
class Run:
    """A finished training run."""

    dir: Path
    provenance: dict
    test: Any = None  # evaluate.Evaluation of best.pt on test

    @property
    def val(self) -> dict:
        return self.provenance["metrics"]["val"]

    @property
    def weights(self) -> Path:
        return self.dir / "weights" / "best.pt"

    @property
    def history(self):
        from .metrics import load_history

        return load_history(self.dir)

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        """A finished run from its directory: provenance, and the test evaluation of best.pt (the stored one when
        current, else evaluated once and stored; None only for a run without best.pt)."""
        d = Path(run_dir)
        try:
            provenance = json.loads((d / PROVENANCE).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{d}: no {PROVENANCE} (not a finished fmnist-yolo run)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{d / PROVENANCE}: invalid JSON ({e.msg}, line {e.lineno})") from None
        if provenance.get("status") == "running":
            raise ConfigError(f"{d}: training has not finished (resume it with `fmnist-yolo train resume={d}`)")
        from .evaluate import best_on_test

        return cls(d, provenance, best_on_test(d) if (d / "weights" / "best.pt").is_file() else None)


def stored_test(run_dir: Path):
    """best.pt's stored test evaluation (an evaluate.Evaluation), or None if absent or older than best.pt."""
    from .evaluate import Evaluation

    preds, best = run_dir / TEST_PREDICTIONS, run_dir / "weights" / "best.pt"
    if not preds.is_file() or (best.is_file() and preds.stat().st_mtime < best.stat().st_mtime):
        return None
    return Evaluation.load(preds, "test", str(best))


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch
    import ultralytics

    return {"fmnist_yolo": __version__, "ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "pandas": version("pandas"), "python": platform.python_version()}  # fmt: skip


def train(callbacks: dict[str, Any] | None = None, **overrides: Any) -> Run:
    """Train the Fashion-MNIST recipe; any Ultralytics train argument can be overridden.

    Defaults: model=yolo11n-cls.pt, data=the prepared tree, epochs=100, imgsz=28. Also accepts
    recipe=NAME, cfg=FILE.yaml (arguments from a file), fast=True (in-memory data path),
    evaluate_test=False, strict_weights=True (no from-scratch fallback) and resume=RUN_DIR
    (continue an interrupted run from its last.pt to the planned epochs).

    Args:
        callbacks: extra Ultralytics callbacks, event name -> function(trainer), e.g. {"on_fit_epoch_end": f}.

    Returns:
        A Run: its directory, val metrics of best.pt (chosen on val), and its one evaluation on test.
    """
    from ultralytics import YOLO

    from .convert import manifest_checksum

    if callbacks is not None and not (isinstance(callbacks, dict) and all(map(callable, callbacks.values()))):
        raise ConfigError("callbacks must map Ultralytics event names to functions (Python API only)")
    if overrides.get("resume") not in (None, False):
        return _resume(overrides.pop("resume"), overrides)
    args = resolve_args(overrides)
    args.pop("resume", None)
    strict = bool(args.pop("strict_weights"))
    recipe, evaluate_test, fast = args.pop("recipe"), bool(args.pop("evaluate_test")), bool(args.pop("fast"))
    select_on = str(args.pop("select_on"))
    from .trainer import SELECT_ON

    if select_on not in SELECT_ON:
        raise ConfigError(f"select_on must be one of {', '.join(SELECT_ON)}, found '{select_on}'")
    if fast:
        if device_count(args.get("device")) > 1:
            raise ConfigError(f"fast=True trains on one device, found device={args['device']}; drop fast=True for "
                              "multi-GPU (DDP) training")  # fmt: skip
    tree = ensure_tree(args.pop("data"))
    has_val = any((tree / d).is_dir() for d in ("val", "validation", "valid"))
    if not has_val:
        print(f"WARNING: {tree} has no val/ split, so Ultralytics selects best.pt on test/: the test score is then "
              "not an unbiased estimate. Prepare with the default --val to keep test for the final evaluation.",
              file=sys.stderr)  # fmt: skip
    weights = resolve_weights(args.pop("model"), strict)
    provenance = {
        "fmnist_yolo_version": __version__,
        "status": "running",
        "args": {**args, "model": weights.model, "data": str(tree), "strict_weights": strict,
                 "evaluate_test": evaluate_test, "fast": fast, "select_on": select_on},
        "recipe": {"name": recipe, "file": str(recipe_path(recipe).resolve())},
        "requested": {k: overrides.get(k) for k in overrides},
        "imgsz": {"requested": args["imgsz"], "effective": None,
                  "note": "Ultralytics rounds imgsz up to a multiple of the model stride (32)"},
        "model": {"requested": overrides.get("model", DEFAULTS.model), "used": weights.model,
                  "pretrained": weights.pretrained, "source": weights.source, "tried": weights.tried},
        "data": {"tree": str(tree), "manifest_sha256": manifest_checksum(tree), "has_val": has_val,
                 "model_selection_split": "val" if has_val else "test", "model_selection_metric": select_on},
    }  # fmt: skip
    model = YOLO(weights.model)
    for event, function in (callbacks or {}).items():
        model.add_callback(event, function)
    return _run(model, provenance, tree, {"data": str(tree), **args})


AMP_CHECK_WEIGHTS = "yolo26n.pt"  # what Ultralytics 8.4's check_amp downloads (a detection model) to test AMP


def amp_agrees(model, imgsz: int = 64, dtype=None) -> bool:
    """Whether this classification model's class probabilities under autocast match FP32 on a fixed random batch."""
    import torch

    device = next(model.parameters()).device
    x = torch.rand(8, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(x)
            with torch.autocast(device.type, dtype=dtype or torch.float16):
                mixed = model(x)
    finally:
        model.train(was_training)
    full, mixed = (y[0] if isinstance(y, (list, tuple)) else y for y in (full, mixed))  # eval: (probs, logits)
    return bool(torch.isfinite(mixed).all() and (full - mixed.float()).abs().max() < 0.02)


def _on_accelerator(model) -> bool:
    """Whether Ultralytics' AMP check would test this model (it answers False itself on CPU and MPS)."""
    return next(model.parameters()).device.type not in {"cpu", "mps"}


@contextmanager
def amp_check_offline():
    """Within: Ultralytics' AMP check tests the model being trained when its download is unavailable.

    Offline, Ultralytics skips the check and keeps AMP on, untested; this tests our own model instead (no
    download), keeping mixed precision when FP16 agrees with FP32 and turning it off, as Ultralytics does, when not.
    """
    import ultralytics.engine.trainer as engine
    from ultralytics.utils import WEIGHTS_DIR

    original = engine.check_amp

    def check(model) -> bool:
        if not _on_accelerator(model) or (WEIGHTS_DIR / AMP_CHECK_WEIGHTS).is_file():
            return original(model)
        ok = amp_agrees(model)
        print(f"AMP: {'checks passed on the model itself' if ok else 'FP16 disagrees with FP32: AMP disabled'} "
              f"({AMP_CHECK_WEIGHTS} for Ultralytics' check is not available offline)", file=sys.stderr)  # fmt: skip
        return ok

    engine.check_amp = check
    try:
        yield
    finally:
        engine.check_amp = original


def _run(model, provenance: dict, tree: Path, train_args: dict) -> Run:
    """Train (or resume), evaluate best.pt once on test, and keep `fmnist_yolo.json` current throughout."""
    t0 = time.time()
    previous_wall = provenance.get("wall_time_s", 0.0)

    def started(trainer) -> None:  # written at the start too: an interrupted run can be resumed with its history
        _record_trainer(provenance, trainer)
        _write_provenance(Path(trainer.save_dir), provenance)

    model.add_callback("on_train_start", started)
    model.add_callback("on_model_save", _keep_safe_copy)
    try:
        with amp_check_offline(), warnings.catch_warnings():
            # With Ray installed, Ultralytics' Ray Tune callback asks Ray for a trial id after every epoch, and Ray
            # warns each time it is asked outside a search.
            warnings.filterwarnings("ignore", message="`get_trial_id` is meant to only be called inside")
            model.train(**train_args, trainer=_trainer(provenance["args"].get("fast", False),
                                                       provenance["args"].get("select_on", "top1_top5")))
    except (FileNotFoundError, ValueError, TypeError, SyntaxError, AssertionError) as e:
        raise FmnistError(f"training failed: {str(e).splitlines()[0]}") from None
    wall = time.time() - t0
    trainer = model.trainer
    run_dir = Path(trainer.save_dir)
    val = {"top1": float(trainer.metrics.get("metrics/accuracy_top1", float("nan"))),
           "top5": float(trainer.metrics.get("metrics/accuracy_top5", float("nan")))}  # fmt: skip
    # The resolved batch: `batch=-1` (AutoBatch) or a memory fraction is not a size the validator takes.
    best = run_dir / "weights" / "best.pt"
    test = None
    if provenance["args"].get("evaluate_test", True):
        from .evaluate import evaluate

        test = evaluate(best, "test", tree, device=train_args.get("device"), batch=int(trainer.batch_size))
        test.save(run_dir / TEST_PREDICTIONS)
    _record_trainer(provenance, trainer)
    provenance.update(
        status="finished", epochs_completed=int(trainer.epoch) + 1, wall_time_s=round(previous_wall + wall, 2),
        metrics={"val": val, "test": test.summary() if test else None},
        test_predictions=TEST_PREDICTIONS if test else None,
    )  # fmt: skip
    _write_provenance(run_dir, provenance)
    selected = provenance["data"]["model_selection_split"]
    tested = f"test top-1 {test.top1:.4f}" if test else "test not evaluated (evaluate_test=False)"
    print(f"Run {run_dir}: val top-1 {val['top1']:.4f}, {tested} (best.pt chosen on "
          f"{'val' if selected == 'val' else 'TEST'}), {wall:.0f}s")  # fmt: skip
    return Run(run_dir, provenance, test)


def _trainer(fast: bool, select_on: str):
    """What Ultralytics instantiates: its ClassificationTrainer with our selection rule, or the in-memory one."""
    from functools import partial

    if fast:
        from .memory import MemoryTrainer as cls
    else:
        from .trainer import Trainer as cls
    return partial(cls, select_on=select_on)


def _record_trainer(provenance: dict, trainer) -> None:
    """Facts only the running trainer knows: effective imgsz, parameters, device, processes."""
    provenance["imgsz"]["effective"] = int(trainer.args.imgsz)
    provenance["model"]["parameters"] = sum(p.numel() for p in trainer.model.parameters())
    provenance.update(device=str(trainer.device), amp=bool(getattr(trainer, "amp", False)),
                      world_size=int(getattr(trainer, "world_size", 1)), epochs_planned=int(trainer.epochs),
                      run_dir=str(trainer.save_dir), versions=versions())  # fmt: skip


def _write_provenance(run_dir: Path, provenance: dict) -> None:
    with atomic_path(run_dir / PROVENANCE) as tmp:  # a kill never leaves a half-written file
        tmp.write_text(json.dumps(provenance, indent=1, default=str) + "\n")


SAFE_LAST = ".last.safe.pt"  # last.pt, copied atomically: Ultralytics writes last.pt in place


def _keep_safe_copy(trainer) -> None:
    """After each checkpoint save: a copy of last.pt that a kill during the next save cannot truncate."""
    last = Path(trainer.last)
    if last.is_file():
        with atomic_path(last.with_name(SAFE_LAST)) as tmp:
            shutil.copyfile(last, tmp)


def _load_resumable(path: Path) -> dict | None:
    """The checkpoint dict when `path` loads and can be resumed from; None when damaged or unreadable."""
    from ultralytics.utils.patches import torch_load

    try:
        ckpt = torch_load(path, map_location="cpu", weights_only=False)
    except Exception:  # truncated zip, bad pickle: torch raises several types
        return None
    return ckpt if isinstance(ckpt, dict) else None


def resume_checkpoint(target: str | Path | bool) -> tuple[Path, Path, dict]:
    """(run dir, checkpoint, its contents) to resume: RUN_DIR, RUN_DIR/weights/last.pt, or True (latest run)."""
    if target is True:
        from ultralytics.utils.files import get_latest_run

        target = get_latest_run("runs") or ""
        if not target:
            raise ConfigError("resume=True: no last.pt under runs/; pass resume=RUN_DIR")
    p = Path(str(target))
    last = p / "weights" / "last.pt" if p.is_dir() else p
    run_dir = last.parent.parent
    if not p.exists():
        raise ConfigError(f"{p}: run directory not found")
    if not last.is_file():
        raise ConfigError(f"{last}: no checkpoint to resume from (interrupted before the first epoch ended?)")
    warn_if_untrusted(last)
    ckpt = _load_resumable(last)
    if ckpt is None:
        safe = last.with_name(SAFE_LAST)
        ckpt = _load_resumable(safe) if safe.is_file() else None
        if ckpt is None:
            raise ConfigError(f"{last}: damaged checkpoint (killed while saving?) and no usable {SAFE_LAST} beside it")
        print(f"WARNING: {last} is damaged (killed while saving?); resuming from {safe}, one epoch earlier.",
              file=sys.stderr)  # fmt: skip
        shutil.copyfile(safe, last)
    if ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0:
        raise ConfigError(f"{last}: training already finished (no optimizer state); nothing to resume")
    return run_dir, last, ckpt


def _resume(target: str | Path | bool, overrides: dict[str, Any]) -> Run:
    """Continue an interrupted run from its last.pt to the planned epochs, recording the resume."""
    from ultralytics import YOLO

    check_keys(overrides, valid_keys())
    run_dir, last, ckpt = resume_checkpoint(target)
    train_args = ckpt["train_args"]
    tree = ensure_tree(overrides.pop("data", None) or train_args["data"])
    try:
        provenance = json.loads((run_dir / PROVENANCE).read_text())
    except (OSError, ValueError):  # a plain Ultralytics run, or one interrupted before its first epoch began
        model = str(train_args.get("model", ""))
        provenance = {"fmnist_yolo_version": __version__, "args": {**train_args, "data": str(tree)},
                      "requested": {}, "imgsz": {"requested": train_args.get("imgsz"), "effective": None},
                      "model": {"requested": model, "used": model, "pretrained": model.endswith(".pt"),
                                "source": "from the checkpoint's train_args (run not started by fmnist-yolo)"},
                      "data": {"tree": str(tree), "has_val": (tree / "val").is_dir(),
                               "model_selection_split": "val" if (tree / "val").is_dir() else "test"}}  # fmt: skip
    from .convert import manifest_checksum

    if provenance["data"].get("manifest_sha256") not in (None, manifest_checksum(tree)):
        print(f"WARNING: {tree} changed since this run started (manifest differs); resuming on it anyway.",
              file=sys.stderr)  # fmt: skip
    provenance["status"] = "running"
    provenance.setdefault("resumed", []).append({
        "checkpoint": str(last), "completed_epochs": int(ckpt["epoch"]) + 1, "planned_epochs": train_args["epochs"],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": overrides,
    })  # fmt: skip
    print(f"Resuming {run_dir} after epoch {int(ckpt['epoch']) + 1} of {train_args['epochs']}", file=sys.stderr)
    return _run(YOLO(str(last)), provenance, tree, {**overrides, "resume": True, "data": str(tree)})
