"""fmnist-yolo: Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible."""

__version__ = "0.1.0"

# Public names, imported on first use: `fmnist-yolo train` then starts as fast as `yolo` (pandas costs ~0.3 s).
_EXPORTS = {
    "Evaluation": "evaluate", "Run": "train", "benchmark_table": "report", "compare": "compare",
    "evaluate": "evaluate", "load_history": "metrics", "predict": "evaluate", "prepare": "convert",
    "recipes": "train", "report": "report", "train": "train",
}  # fmt: skip
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fmnist_yolo' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
