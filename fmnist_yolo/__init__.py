"""fmnist-yolo: Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible."""

__version__ = "0.1.0"

from .convert import prepare  # noqa: E402

__all__ = ["__version__", "prepare"]
