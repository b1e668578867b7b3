"""fmnist-yolo: Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible."""

__version__ = "0.1.0"

from .compare import compare  # noqa: E402
from .convert import prepare  # noqa: E402
from .evaluate import Evaluation, evaluate, predict  # noqa: E402
from .metrics import load_history  # noqa: E402
from .report import benchmark_table, report  # noqa: E402
from .train import Run, recipes, train  # noqa: E402
from .tune import tune  # noqa: E402  (Ray itself is imported on first use)

__all__ = ["Evaluation", "Run", "__version__", "benchmark_table", "compare", "evaluate", "load_history", "predict",
           "prepare", "recipes", "report", "train", "tune"]  # fmt: skip
