"""Deprecated location of the fast data path: use fmnist_yolo.training.fast (removed in 0.3)."""

import warnings

from .training.fast import Augment, MemoryDataset, MemoryLoader, MemoryTrainer  # noqa: F401

warnings.warn("fmnist_yolo.memory is deprecated; import from fmnist_yolo.training.fast", DeprecationWarning,
              stacklevel=2)  # fmt: skip
