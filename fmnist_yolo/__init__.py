"""fmnist-yolo: Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible.

The public API is imported on first use (PEP 562), so `import fmnist_yolo` and the CLI's start stay light:
neither pandas nor torch is loaded until a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> module that defines it, in data-flow order
_API = {
    "prepare": "fmnist_yolo.data.prepare",
    "check": "fmnist_yolo.data.check",
    "evaluate": "fmnist_yolo.evaluation.evaluate",
    "Evaluation": "fmnist_yolo.evaluation.evaluate",
    "predict": "fmnist_yolo.evaluation.predict",
    "train": "fmnist_yolo.training.train",
    "Run": "fmnist_yolo.training.train",
    "recipes": "fmnist_yolo.training.args",
    "load_history": "fmnist_yolo.rundir",
    "compare": "fmnist_yolo.analysis.compare",
    "report": "fmnist_yolo.analysis.report",
    "reproduce": "fmnist_yolo.reproduction",
    "benchmark_table": "fmnist_yolo.analysis.published",
    "tune": "fmnist_yolo.training.tune",
    "export": "fmnist_yolo.deployment.export",
}
__all__ = ["Evaluation", "Run", "__version__", "benchmark_table", "check", "compare", "evaluate", "export",
           "load_history", "predict", "prepare", "recipes", "report", "reproduce", "train", "tune"]  # fmt: skip

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ imports on demand
    from .analysis.compare import compare
    from .analysis.published import benchmark_table
    from .analysis.report import report
    from .data.check import check
    from .data.prepare import prepare
    from .deployment.export import export
    from .evaluation.evaluate import Evaluation, evaluate
    from .evaluation.predict import predict
    from .reproduction import reproduce
    from .rundir import load_history
    from .training.args import recipes
    from .training.train import Run, train
    from .training.tune import tune


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'fmnist_yolo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
