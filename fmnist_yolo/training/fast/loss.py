"""The fused chunk's loss (stock's per micro-batch, summed) and the logged loss that stays on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DeviceLoss:
    """A logged training loss that stays on the device: printing it never makes the host wait for the GPU.

    Ultralytics' loop averages the loss items every iteration ((tloss * i + v) / (i + 1)) and prints them with %g in
    the progress bar; on a CUDA tensor each print is a host sync, one per step. Arithmetic on DeviceLoss stays on the
    device; `float()` (the progress bar) starts a non-blocking copy to the host and answers the newest copy that has
    already landed (the first of a run waits once). `exact()` waits, for results.csv and the loggers.
    """

    def __init__(self, value: torch.Tensor, box: dict | None = None):
        self.value = value.detach()
        self._box = box if box is not None else {"landed": None, "pending": []}  # shared by derived values

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch functions see the tensor (Ultralytics' validator shapes its loss sums with zeros_like)."""
        from torch.utils._pytree import tree_map

        def unwrap(a):
            return a.value if isinstance(a, DeviceLoss) else a

        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))

    def _derive(self, value: torch.Tensor) -> DeviceLoss:
        return DeviceLoss(value, self._box)

    def __add__(self, other):
        return self._derive(self.value + (other.value if isinstance(other, DeviceLoss) else other))

    __radd__ = __add__

    def __mul__(self, other):
        return self._derive(self.value * (other.value if isinstance(other, DeviceLoss) else other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._derive(self.value / (other.value if isinstance(other, DeviceLoss) else other))

    def exact(self) -> float:
        """The value, waiting for the device if it must."""
        return self.value.float().item()

    def _on_accelerator(self) -> bool:
        return self.value.device.type == "cuda"

    def __float__(self) -> float:
        if not self._on_accelerator():
            return self.exact()  # on the CPU the value is already here
        box = self._box
        host = torch.empty((), dtype=torch.float32, pin_memory=self.value.is_cuda)
        host.copy_(self.value.float(), non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        box["pending"].append((done, host))
        while box["pending"] and box["pending"][0][0].query():  # copies land in order
            box["landed"] = float(box["pending"].pop(0)[1])
        if box["landed"] is None:  # nothing landed yet this run: wait once
            done.synchronize()
            box["landed"], box["pending"] = float(host), []
        return box["landed"]

    def __format__(self, spec: str) -> str:
        return format(float(self), spec)


class ChunkLoss:
    """Stock's classification loss summed over the micro-batches of a chunk.

    Each image weighs 1 / (its micro-batch's size), so the gradient is the sum of the micro-batch means that stock
    accumulates before a step, the short last micro-batch of an epoch included. The logged loss is the chunk's mean
    (the progress bar's); an epoch's recorded loss is the mean over its micro-batches, as stock's (MemoryTrainer).
    """

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict]:
        preds = preds[1] if isinstance(preds, (list, tuple)) else preds
        ce = F.cross_entropy(preds, batch["cls"], reduction="none")
        loss = (ce * batch["weight"]).sum() if "weight" in batch else ce.mean()
        return loss, {"loss": DeviceLoss(ce.mean())}
