"""Evaluate weights on a split with Ultralytics' own validator: metrics, per-image predictions, provenance."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .. import compat
from ..checkpoints import check_classifier, load_checkpoint, warn_if_untrusted
from ..config import CLASS_DIRS, DEFAULTS, check_options
from ..data.tree import find_tree, manifest_checksum, val_split
from ..errors import ConfigError, RunError
from ..files import atomic_path, read_csv
from ..rundir import paths, predictions_current, read_args, read_provenance
from . import metrics


@dataclass
class Evaluation:
    """Metrics of one model on one split; tables are pandas DataFrames."""

    split: str
    weights: str
    top1: float  # Ultralytics' own top-1, which our predictions reproduce exactly
    top5: float
    predictions: pd.DataFrame  # one row per image: file, true, pred, confidence, correct (and p_<class>)
    names: list[str] = field(default_factory=list)
    tta: str | None = None  # test-time augmentation the probabilities were averaged over (None: the image alone)
    tree: str | None = None  # the tree evaluated on (None: not known, e.g. loaded from a file)
    manifest_sha256: str | None = None  # that tree's manifest checksum (None: not known, or a tree without one)

    @property
    def confusion(self) -> pd.DataFrame:
        """True x predicted counts with class names."""
        return metrics.confusion(self.predictions["true_id"], self.predictions["pred_id"], self.names)

    @property
    def confusion_normalized(self) -> pd.DataFrame:
        """The confusion matrix with each true class's row summing to 1."""
        return metrics.normalize(self.confusion)

    @property
    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1, support, one-vs-rest accuracy and the most confused class, per class."""
        return metrics.per_class(self.confusion)

    @property
    def macro_f1(self) -> float:
        """The unweighted mean of the per-class F1 scores."""
        return float(self.per_class["f1"].mean())

    @property
    def calibration(self) -> pd.DataFrame:
        """Reliability table of the top-1 confidence: per bin, images, mean confidence, accuracy (15 bins)."""
        return metrics.calibration(self.predictions["confidence"], self.predictions["correct"])

    @property
    def ece(self) -> float:
        """Expected calibration error of the top-1 confidence (15 equal-width bins)."""
        return metrics.ece(self.predictions["confidence"], self.predictions["correct"])

    def headline_figures(self) -> dict:
        """The headline figures: split, top-1, top-5, macro-F1, ECE, images and TTA."""
        return {"split": self.split, "top1": self.top1, "top5": self.top5, "macro_f1": self.macro_f1,
                "ece": self.ece, "images": len(self.predictions), "tta": self.tta}  # fmt: skip

    def misclassified(self, n: int = DEFAULTS.top) -> pd.DataFrame:
        """The `n` wrong predictions made with the highest confidence."""
        wrong = self.predictions[~self.predictions["correct"]]
        return wrong.nlargest(n, "confidence")[["file", "true", "pred", "confidence"]]

    def to_csv(self, directory: str | Path) -> list[Path]:
        """Write per_class.csv, confusion.csv and predictions.csv into `directory`; return their paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, table in (("per_class", self.per_class), ("confusion", self.confusion)):
            with atomic_path(d / f"{name}.csv") as tmp:
                table.to_csv(tmp)
        return [d / "per_class.csv", d / "confusion.csv", self.save(d / "predictions.csv")]

    def save(self, path: str | Path, weights: str | None = None) -> Path:
        """Write the per-image predictions (with probabilities) as CSV, each row naming the weights they come from
        (`weights`, default self.weights, in a `weights` column); `Evaluation.load` reads them back."""
        table = self.predictions.drop(columns=[WEIGHTS_COLUMN], errors="ignore")
        with atomic_path(path) as tmp:
            table.assign(**{WEIGHTS_COLUMN: weights or self.weights}).to_csv(tmp, index=False)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, split: str = "test", weights: str = "") -> Evaluation:
        """An Evaluation from a predictions CSV; top-1/top-5 recomputed from the stored probabilities. `weights` is
        the file's own `weights` column when it has one (files written before it: the `weights` given)."""
        table = read_csv(path, RunError, "predictions file")
        if WEIGHTS_COLUMN in table:
            named = table.pop(WEIGHTS_COLUMN).dropna().unique()
            if len(named) != 1:
                raise RunError(f"{path}: predictions file is damaged (its weights column names {len(named)} files)")
            weights = str(named[0])
        names = [c[2:] for c in table.columns if c.startswith("p_")]
        if not names or not {"true_id", "pred_id", "correct"} <= set(table.columns):
            raise RunError(f"{path}: not a predictions file (expected true_id, pred_id, correct, p_<class>)")
        if table[["true_id", "pred_id", "correct", *[f"p_{n}" for n in names]]].isna().any().any():
            raise RunError(f"{path}: predictions file is damaged (missing values; cut off?)")
        probs = table[[f"p_{n}" for n in names]].to_numpy()
        top5 = (np.argsort(-probs, axis=1, kind="stable")[:, :5] == table["true_id"].to_numpy()[:, None]).any(1)
        return cls(split, weights, float(table["correct"].mean()), float(top5.mean()), table, names)


WEIGHTS_COLUMN = "weights"  # in a stored predictions file: the weights they come from (relative to a run's directory)
EXPORTED = (".onnx", ".torchscript", ".engine", ".mlpackage", ".tflite")  # exported files AutoBackend runs


def check_ultralytics_keys(args: dict, command: str) -> None:
    """ConfigError for a key Ultralytics does not know (its SyntaxError would be a traceback), with a suggestion."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ..config import unknown_key

    unknown_key(args, DEFAULT_CFG_DICT, otherwise=f" (see `yolo cfg` for what {command} accepts)")


def trained_model_file(model: str | Path) -> Path:
    """A run directory means its best weights (else last.pt); anything else must be a classification checkpoint.

    The file is loaded and checked here: a damaged or foreign checkpoint is one line, not a traceback from torch.
    """
    p = Path(model)
    if p.is_dir():
        run = paths(p)
        p = next((c for c in (run.best, run.last) if c.is_file()), None)
        if p is None:
            raise RunError(f"{model}: no weights/best.pt or weights/last.pt in this run directory")
    elif not p.is_file() and not (p.suffix in EXPORTED and p.exists()):
        raise ConfigError(f"{p}: model file not found")
    if p.suffix in EXPORTED:
        return p  # an exported model (`fmnist-yolo export`): Ultralytics' AutoBackend runs it
    if p.suffix != ".pt":
        raise ConfigError(f"{p}: not a model: expected a .pt checkpoint or an exported {', '.join(EXPORTED)} file")
    warn_if_untrusted(p)
    check_classifier(p, load_checkpoint(p), classes=len(CLASS_DIRS))
    return p


TTA = ("flip", "flip+shift")  # the original and its mirror image; and the four 2-pixel shifts of each
TTA_SHIFT = 2  # pixels (at the trained imgsz): small against a 32-px image, as the crops in training are


def tta_views(img, tta: str) -> list:
    """The views of a (B, C, H, W) batch that test-time augmentation averages over, the original first.

    "flip": the original and its horizontal mirror. "flip+shift": also each of those shifted by TTA_SHIFT pixels
    left, right, up and down (zero fill, the background of Fashion-MNIST).
    """
    import torch.nn.functional as F

    views = [img, img.flip(-1)]
    if tta == "flip+shift":
        s = TTA_SHIFT
        padded = [F.pad(v, (s, s, s, s)) for v in views[:2]]
        h, w = img.shape[-2:]
        for p in padded:
            views += [
                p[..., s : s + h, :w],
                p[..., s : s + h, 2 * s :],
                p[..., :h, s : s + w],
                p[..., 2 * s :, s : s + w],
            ]
    return views


def _tta(value) -> str | None:
    """tta=True means "flip"; False/None/"" none; else one of TTA."""
    if value in (None, False, "", "none", "False"):
        return None
    value = "flip" if value is True or value == "True" else str(value)
    if value not in TTA:
        raise ConfigError(f"tta must be True, False or one of {', '.join(TTA)}, found {value!r}")
    return value


def _capturing_validator():
    import torch
    from ultralytics.data import build_dataloader
    from ultralytics.models.yolo.classify import ClassificationValidator

    class CapturingValidator(ClassificationValidator):
        """Ultralytics' validator, in file order (no shuffle), also keeping each image's probabilities."""

        def __init__(self, *args, tta: str | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.tta = tta

        def init_metrics(self, model):
            super().init_metrics(model)
            self.probs = []

        def preprocess(self, batch):
            batch = super().preprocess(batch)
            if self.tta:  # every view of the batch in one forward pass, views stacked along the batch
                batch["img"] = torch.cat(tta_views(batch["img"], self.tta))
            return batch

        def update_metrics(self, preds, batch):
            if self.tta:  # the mean of the views' class probabilities
                preds = preds.float().view(-1, len(batch["cls"]), preds.shape[-1]).mean(0)
            super().update_metrics(preds, batch)
            self.probs.append(preds.float().cpu())

        def get_dataloader(self, dataset_path, batch_size):
            dataset = self.build_dataset(dataset_path)
            if not dataset.samples:
                raise FileNotFoundError(f"No images from the model's classes found in {dataset_path}")
            return build_dataloader(dataset, batch_size, self.args.workers, shuffle=False, rank=-1, device=self.device)

    return CapturingValidator


def evaluate(
    weights: str | Path,
    split: str = DEFAULTS.split,
    data: str | Path | None = None,
    tta: bool | str = DEFAULTS.tta,
    **overrides,
) -> Evaluation:
    """Run Ultralytics' validator on `split` and return metrics with per-image predictions.

    Args:
        weights: a .pt file or a run directory (its weights/best.pt).
        split: "test" or "val" (or "train").
        data: the tree (default: the prepared `datasets/fashion-mnist`).
        tta: test-time augmentation: True or "flip" averages the class probabilities of each image and its
            horizontal mirror; "flip+shift" also of 2-pixel shifts of both (10 views). Decide it on val.
        **overrides: other Ultralytics val arguments (batch, device, workers, ...).
    """
    import torch
    from ultralytics import YOLO

    from ..data.prepare import ensure_tree

    compat.check_version()  # the validator seams above are Ultralytics' internals too
    check_options("val", {"split": split})  # the schema's rule, as `fmnist-yolo val` checks it
    path = trained_model_file(weights)
    tree = ensure_tree(data)
    if not (tree / "train").is_dir():  # Ultralytics would split the directory anew into <tree>_split and use that
        raise ConfigError(f"{tree}: no train/ class folders (Ultralytics takes the class names from train/)")
    if split == "val" and val_split(tree) is None:
        raise ConfigError(f"{tree}: no val/ split (prepared with val_size=0); use split=test")
    if split != "val" and not (tree / split).is_dir():
        raise ConfigError(f"{tree}: no {split}/ split")
    tta = _tta(tta)
    check_ultralytics_keys(overrides, "val")
    model = YOLO(str(path), task="classify")
    captured = {}
    model.add_callback("on_val_end", lambda v: captured.setdefault("v", v))
    args = {"plots": False, **overrides, "data": str(tree), "split": split}
    try:
        model.val(validator=partial(_capturing_validator(), tta=tta), **args)
    except (ValueError, TypeError, SyntaxError, FileNotFoundError) as e:  # Ultralytics' argument and data errors
        raise ConfigError(f"{path}: cannot evaluate on {tree / split}: {str(e).splitlines()[0]}") from None
    v = captured["v"]
    probs = torch.cat(v.probs).numpy()
    true = torch.cat(v.targets).numpy().astype(int)
    names = [v.names[i] for i in range(len(v.names))]
    files = [s[0] for s in v.dataloader.dataset.samples]
    pred = probs.argmax(1)
    table = pd.DataFrame({
        "file": files, "true_id": true, "pred_id": pred,
        "true": np.asarray(names, dtype=object)[true], "pred": np.asarray(names, dtype=object)[pred],
        "confidence": probs.max(1), "correct": pred == true,
    })  # fmt: skip
    table = pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in names])], axis=1)
    return Evaluation(split, str(path), float(v.metrics.top1), float(v.metrics.top5), table, names, tta, str(tree),
                      manifest_checksum(tree))  # fmt: skip


BEST = "weights/best.pt"  # what a run's test_predictions.csv is made from, as its weights column names it


def stored_test(run_dir: str | Path) -> Evaluation | None:
    """best.pt's stored test evaluation (test_predictions.csv), or None when there is none, it is older than best.pt,
    or it names other weights. It needs no model: a run whose weights were pruned keeps it."""
    run = paths(run_dir)
    if not predictions_current(run_dir):
        return None
    stored = Evaluation.load(run.test_predictions, "test", BEST)  # files from before the weights column: best.pt's
    if Path(stored.weights).as_posix() not in (BEST, run.best.as_posix()):
        return None
    stored.weights = str(run.best)
    return stored


def _folder(data: str | Path | None) -> Path | None:
    """A tree as a run names it (a path, or a name under Ultralytics' datasets_dir), if it is there; never prepared."""
    return None if data is None else find_tree(data)


def _own_tree(run_dir: Path, record) -> tuple[str | Path | None, str | None]:
    """The tree the run was trained on, as recorded, and its manifest checksum (recorded, or read when it is there)."""
    if record is not None:
        return record.data.get("tree"), record.data.get("manifest_sha256")
    # a plain `yolo classify train` run: its data= argument (a path or a name under datasets_dir)
    data = read_args(run_dir).get("data")
    folder = _folder(data)
    return data, manifest_checksum(folder) if folder is not None else None


def is_own_tree(run_dir: str | Path, tree: str | Path) -> bool:
    """Whether `tree` holds the data the run was trained on: the same manifest (a moved or rebuilt identical tree),
    or, for trees without a manifest, the same directory."""
    own, checksum = _own_tree(Path(run_dir), read_provenance(run_dir))
    theirs = _folder(tree)
    if theirs is None:
        return False
    if checksum is not None:
        return manifest_checksum(theirs) == checksum
    own_folder = _folder(own)
    return own_folder is not None and own_folder.resolve() == theirs.resolve() and manifest_checksum(theirs) is None


def other_tree_label(tree: str | Path, checksum: str | None) -> str:
    """How an evaluation on another tree is named beside the run's own: the tree's folder and its manifest."""
    return f"{Path(tree).name}-{checksum[:12] if checksum else 'no-manifest'}"


def best_on_test(run_dir: str | Path, data: str | Path | None = None, last_if_no_best: bool = True) -> Evaluation:
    """best.pt of a run on test: the predictions stored at training time when current (no model is loaded), else a
    fresh evaluation, which is stored (test_predictions.csv is derived from best.pt: rebuilt when missing, older or
    damaged, and said so).

    `data` evaluates on that tree. The run's own data (the same manifest: a moved tree) replaces the stored
    predictions; another tree's never does (nor the run's tree rebuilt with other data): its predictions are kept
    apart, as `test_predictions.<tree>-<manifest sha256[:12]>.csv`. A fresh Evaluation carries `tree` and
    `manifest_sha256`; `is_own_tree(run_dir, ev.tree)` tells which it was.

    A run without best.pt: last.pt is evaluated when `last_if_no_best` (its Evaluation's `weights` say so), and never
    stored as the run's test predictions; else, or without last.pt either, RunError.
    """
    import logging

    run = paths(run_dir)
    record = read_provenance(run_dir)
    why = None
    if data is None:
        try:
            if (stored := stored_test(run_dir)) is not None:
                return stored
            why = "is older than best.pt" if run.test_predictions.is_file() else "is missing"
        except RunError as e:
            why = f"is damaged ({str(e).split(': ', 1)[-1]})"
        data = _own_tree(Path(run_dir), record)[0]
    weights = run.best if run.best.is_file() else run.last if last_if_no_best and run.last.is_file() else None
    if weights is None:
        wanted = "weights/best.pt or weights/last.pt" if last_if_no_best else "weights/best.pt"
        raise RunError(f"{run_dir}: no current {run.test_predictions.name} and no {wanted} to evaluate")
    result = evaluate(trained_model_file(weights), "test", data)
    if not is_own_tree(run_dir, result.tree):  # another tree, or the run's own since rebuilt with other data
        keep = run.dir / f"{run.test_predictions.stem}.{other_tree_label(result.tree, result.manifest_sha256)}.csv"
    elif weights == run.best:
        keep = run.test_predictions
    else:  # last.pt's figures are never stored as the run's (best.pt's) test predictions
        keep = None
    if keep is not None:
        with contextlib.suppress(OSError):  # a read-only run directory: the evaluation stands, unstored
            result.save(keep, weights=weights.relative_to(run.dir).as_posix())
    if why and keep == run.test_predictions:
        logging.getLogger(__name__).info(f"Note: {run.test_predictions} {why}: evaluated {weights} on test once "
                                         "and stored the predictions")  # fmt: skip
    return result


__all__ = ["Evaluation", "best_on_test", "evaluate", "is_own_tree", "stored_test"]
