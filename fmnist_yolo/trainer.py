"""Ultralytics' ClassificationTrainer with the one seam fmnist-yolo adds on every path: how best.pt is chosen.

Ultralytics keeps as best.pt the epoch with the highest (top-1 + top-5) / 2 on val. On Fashion-MNIST top-5 sits near
0.999 from the first epochs, so it mostly adds noise to the choice; `select_on="top1"` chooses on val top-1 alone.
"""

from __future__ import annotations

from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.utils.metrics import ClassifyMetrics

SELECT_ON = ("top1_top5", "top1")  # Ultralytics' own fitness, and val top-1 alone


class Top1Metrics(ClassifyMetrics):
    """Ultralytics' classification metrics whose fitness (what best.pt and early stopping maximise) is top-1."""

    @property
    def fitness(self) -> float:
        """Top-1 accuracy."""
        return float(self.top1)


class Trainer(ClassificationTrainer):
    """ClassificationTrainer that selects best.pt by `select_on`: "top1_top5" (Ultralytics' rule) or "top1"."""

    def __init__(self, *args, select_on: str = "top1_top5", **kwargs):
        if select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, found {select_on!r}")
        self.select_on = select_on
        super().__init__(*args, **kwargs)

    def get_validator(self):
        """Ultralytics' validator; with select_on="top1" its fitness is val top-1."""
        validator = super().get_validator()
        if self.select_on == "top1":
            validator.metrics = Top1Metrics()
        return validator
