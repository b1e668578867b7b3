"""Evaluate weights on a split with Ultralytics' own validator, and predict images."""

from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .errors import ConfigError
from .files import atomic_path


@dataclass
class Evaluation:
    """Metrics of one model on one split; tables are pandas DataFrames."""

    split: str
    weights: str
    top1: float  # Ultralytics' own top-1, which our predictions reproduce exactly
    top5: float
    predictions: pd.DataFrame  # one row per image: file, true, pred, confidence, correct (and p_<class>)
    names: list[str] = field(default_factory=list)

    @property
    def confusion(self) -> pd.DataFrame:
        """True x predicted counts with class names."""
        return metrics.confusion(self.predictions["true_id"], self.predictions["pred_id"], self.names)

    @property
    def confusion_normalized(self) -> pd.DataFrame:
        return metrics.normalize(self.confusion)

    @property
    def per_class(self) -> pd.DataFrame:
        return metrics.per_class(self.confusion)

    @property
    def macro_f1(self) -> float:
        return float(self.per_class["f1"].mean())

    def summary(self) -> dict:
        return {"split": self.split, "top1": self.top1, "top5": self.top5, "macro_f1": self.macro_f1,
                "images": len(self.predictions)}  # fmt: skip

    def misclassified(self, n: int = 25) -> pd.DataFrame:
        """The `n` wrong predictions made with the highest confidence."""
        wrong = self.predictions[~self.predictions["correct"]]
        return wrong.nlargest(n, "confidence")[["file", "true", "pred", "confidence"]]

    def save(self, path: str | Path) -> Path:
        """Write the per-image predictions (with probabilities) as CSV; `Evaluation.load` reads them back."""
        with atomic_path(path) as tmp:
            self.predictions.to_csv(tmp, index=False)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, split: str = "test", weights: str = "") -> Evaluation:
        """An Evaluation from a predictions CSV; top-1/top-5 recomputed from the stored probabilities."""
        table = pd.read_csv(path)
        names = [c[2:] for c in table.columns if c.startswith("p_")]
        if not names or not {"true_id", "pred_id", "correct"} <= set(table.columns):
            raise ConfigError(f"{path}: not a predictions file (expected true_id, pred_id, correct, p_<class>)")
        probs = table[[f"p_{n}" for n in names]].to_numpy()
        top5 = (np.argsort(-probs, axis=1, kind="stable")[:, :5] == table["true_id"].to_numpy()[:, None]).any(1)
        return cls(split, weights, float(table["correct"].mean()), float(top5.mean()), table, names)


def resolve_weights_path(model: str | Path) -> Path:
    """A run directory means its best weights; anything else must be an existing file."""
    from .train import warn_if_untrusted

    p = Path(model)
    if p.is_dir():
        p = next((c for c in (p / "weights" / "best.pt", p / "weights" / "last.pt") if c.is_file()), None)
        if p is None:
            raise ConfigError(f"{model}: no weights/best.pt or weights/last.pt in this run directory")
    elif not p.is_file():
        raise ConfigError(f"{p}: model file not found")
    warn_if_untrusted(p)
    return p


def _capturing_validator():
    from ultralytics.data import build_dataloader
    from ultralytics.models.yolo.classify import ClassificationValidator

    class CapturingValidator(ClassificationValidator):
        """Ultralytics' validator, in file order (no shuffle), also keeping each image's probabilities."""

        def init_metrics(self, model):
            super().init_metrics(model)
            self.probs = []

        def update_metrics(self, preds, batch):
            super().update_metrics(preds, batch)
            self.probs.append(preds.float().cpu())

        def get_dataloader(self, dataset_path, batch_size):
            dataset = self.build_dataset(dataset_path)
            if not dataset.samples:
                raise FileNotFoundError(f"No images from the model's classes found in {dataset_path}")
            return build_dataloader(dataset, batch_size, self.args.workers, shuffle=False, rank=-1, device=self.device)

    return CapturingValidator


def evaluate(weights: str | Path, split: str = "test", data: str | Path | None = None, **overrides) -> Evaluation:
    """Run Ultralytics' validator on `split` and return metrics with per-image predictions.

    Args:
        weights: a .pt file or a run directory (its weights/best.pt).
        split: "test" or "val" (or "train").
        data: the tree (default: the prepared `datasets/fashion-mnist`).
        **overrides: other Ultralytics val arguments (batch, device, workers, ...).
    """
    import torch
    from ultralytics import YOLO

    from .train import ensure_tree

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, found {split!r}")
    path = resolve_weights_path(weights)
    tree = ensure_tree(data)
    if split == "val" and not (tree / "val").is_dir():
        raise ConfigError(f"{tree}: no val/ split (prepared with --val 0); use split=test")
    model = YOLO(str(path))
    captured = {}
    model.add_callback("on_val_end", lambda v: captured.setdefault("v", v))
    args = {"plots": False, **overrides, "data": str(tree), "split": split}
    model.val(validator=_capturing_validator(), **args)
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
    return Evaluation(split, str(path), float(v.metrics.top1), float(v.metrics.top5), table, names)


def predict(model: str | Path, source: str | Path, **overrides) -> pd.DataFrame:
    """Classify an image or a directory of images; one row per image: file, class, confidence."""
    from ultralytics import YOLO

    weights = resolve_weights_path(model)
    if not Path(source).exists():
        raise ConfigError(f"{source}: source not found")
    rows = []
    with _not_the_yolo_cli():
        results = YOLO(str(weights)).predict(source=str(source), verbose=False, **overrides)
    for r in results:
        rows.append({"file": r.path, "class_id": int(r.probs.top1), "class": r.names[int(r.probs.top1)],
                     "confidence": float(r.probs.top1conf)})  # fmt: skip
    return pd.DataFrame(rows, columns=["file", "class_id", "class", "confidence"])


@contextlib.contextmanager
def _not_the_yolo_cli():
    """Ultralytics treats a process whose argv[0] ends in 'yolo' (so `fmnist-yolo`) as its own CLI and
    then predicts without returning results; hide the name for the call."""
    from ultralytics.utils import ARGV

    saved = ARGV[0] if ARGV else None
    if saved is not None:
        ARGV[0] = "fmnist-yolo-api"  # anything not ending in "yolo"
    try:
        yield
    finally:
        if saved is not None:
            ARGV[0] = saved


__all__ = ["Evaluation", "evaluate", "predict"]
