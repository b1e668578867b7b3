"""fmnist-yolo: Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible."""

__version__ = "0.1.0"

from .convert import prepare  # noqa: E402
from .evaluate import evaluate, predict  # noqa: E402
from .metrics import load_history  # noqa: E402
from .train import Run, train  # noqa: E402

__all__ = ["Run", "__version__", "evaluate", "load_history", "predict", "prepare", "train"]
