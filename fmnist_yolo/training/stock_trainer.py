"""Ultralytics' ClassificationTrainer with what fmnist-yolo adds on every path: how best.pt is chosen, and the check
that training uses every image of the tree.

Ultralytics keeps as best.pt the epoch with the highest (top-1 + top-5) / 2 on val. On Fashion-MNIST top-5 sits near
0.999 from the first epochs, so it mostly adds noise to the choice; `select_on="top1"` chooses on val top-1 alone.
"""

from __future__ import annotations

from copy import copy
from pathlib import Path

import numpy as np
from ultralytics.models.yolo.classify import ClassificationTrainer, ClassificationValidator
from ultralytics.utils.metrics import ClassifyMetrics

from .. import compat
from ..config import DEFAULTS
from ..data.tree import repair_hint
from ..errors import DataError
from .args import check_select_on


class Top1Metrics(ClassifyMetrics):
    """Ultralytics' classification metrics whose fitness (what best.pt and early stopping maximise) is top-1."""

    @property
    def fitness(self) -> float:
        """Top-1 accuracy."""
        return float(self.top1)


def check_all_images_used(dataset, root: str | Path, fraction, split: str) -> None:
    """DataError naming an image that Ultralytics' dataset dropped: it skips undecodable images with a warning and
    trains on the rest, a result that is not what it claims to be. `fraction` and `split` as Ultralytics takes them.
    """
    from ultralytics.data.utils import get_split_fraction

    listed = [s[0] for s in dataset.base.samples]  # every image file of the split, before `fraction`
    share = get_split_fraction(fraction, split)
    count = share if isinstance(share, int) else max(int(share > 0), round(len(listed) * share))
    if count < len(listed):  # Ultralytics 8.4: evenly spaced over the listing
        listed = [listed[i] for i in np.linspace(0, len(listed) - 1, count, dtype=int)]
    kept = {s[0] for s in dataset.samples}
    folders = {Path(f).parent for f in kept}  # class folders the model lacks are dropped on purpose: not counted
    dropped = [f for f in listed if f not in kept and (Path(f).parent in folders or not kept)]
    if dropped:
        raise DataError(
            f"{dropped[0]}: cannot decode image ({len(dropped)} of {len(listed)} in {root} skipped); "
            f"{repair_hint(Path(root).parent)}"
        )


class Trainer(ClassificationTrainer):
    """ClassificationTrainer that selects best.pt by `select_on`: "top1_top5" (Ultralytics' rule) or "top1", and
    refuses to train on a split from which Ultralytics dropped undecodable images."""

    def __init__(self, *args, select_on: str = DEFAULTS.select_on, **kwargs):
        check_select_on(select_on)
        self.select_on = select_on
        compat.drop_stock_mlflow_if_off()  # mlflow=False reaches DDP workers' trainers too
        super().__init__(*args, **kwargs)

    def build_dataset(self, img_path: str, mode: str = "train", batch=None):
        """Ultralytics' dataset, checked to hold every image of the split (its `fraction` of them)."""
        dataset = super().build_dataset(img_path, mode, batch)
        check_all_images_used(dataset, img_path, self.args.fraction, "train" if mode == "train" else self.args.split)
        return dataset

    validator_class = ClassificationValidator  # the fast path's keeps its results on the device

    def get_validator(self):
        """Ultralytics' validator (as ClassificationTrainer builds it); with select_on="top1" its fitness is top-1."""
        args = copy(self.args)
        validator = self.validator_class(self.test_loader, self.save_dir, args=args, _callbacks=self.callbacks)
        if self.select_on == "top1":
            validator.metrics = Top1Metrics()
        return validator
