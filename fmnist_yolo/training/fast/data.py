"""A split decoded once into one uint8 tensor on the device, served as Ultralytics' batches or fused chunks."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.data.dataset import ClassificationDataset

from ...data.tree import repair_hint
from ...errors import DataError
from ..stock_trainer import check_all_images_used
from .augment import Augment
from .plan import Chunk, step_plan

VAL_BATCH = 1024  # images per validation batch: eval-mode outputs do not depend on it; 157 -> 5 batches on 5k val


def decode(files: list[str], workers: int | None = None) -> np.ndarray:
    """Read grey PNGs into one (N, H, W) uint8 array (OpenCV releases the GIL, so threads scale).

    Not Ultralytics' ClassificationDataset.cache_images: it decodes in colour, into three channels of the same
    grey, on cpu_count - 1 threads.
    """
    import cv2

    def read(f: str) -> np.ndarray:
        im = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise DataError(f"{f}: cannot decode image; {repair_hint(Path(f).parents[2])}")  # TREE/split/class/f
        return im

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        images = list(pool.map(read, files, chunksize=512))
    if len({im.shape for im in images}) > 1:
        raise DataError(f"{Path(files[0]).parent.parent}: images differ in size; the fast loader needs one size")
    return np.stack(images)


def resize_like_validation(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 1, size, size) in [0, 1], as Ultralytics' classify_transforms (bilinear, 8-bit result)."""
    x = x[:, None].float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)  # PIL resizes to 8-bit pixels before ToTensor
    return x / 255


class MemoryDataset:
    """One split in memory: (N, H, W) uint8 images and int64 labels, on the training device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: list[str]):
        self.images, self.labels, self.files = images, labels, files

    def __len__(self) -> int:
        return len(self.labels)


class MemoryLoader:
    """Batches of a MemoryDataset in Ultralytics' format ({"img": (B, 3, S, S) float, "cls": (B,) int64}).

    Validation: fixed order, `batch_size` images a batch, the validation resize only.
    Training: a seeded shuffle and augmentation per epoch (seed + epoch: reproducible, also after a resume), cut into
    micro-batches of `batch_size` as stock does. Without a step schedule each micro-batch is one batch; with one
    (`schedule`, set by MemoryTrainer) each batch is a chunk of micro-batches fused for one optimizer step, and
    carries "weight" (per image, for ChunkLoss), "micro" (its images' micro-batches, for MicroBatchNorm) and "chunk".
    """

    num_workers = 0

    def __init__(self, dataset: MemoryDataset, batch_size: int, size: int, augment: Augment | None, seed: int = 0,
                 drop_last: bool = False):  # fmt: skip
        self.dataset, self.batch_size, self.size, self.augment, self.seed = dataset, batch_size, size, augment, seed
        self.sampler = range(len(dataset))  # Ultralytics reads len(loader.sampler)
        self.epoch = 0
        n = len(dataset)
        # as Ultralytics' build_dataloader: drop the short last micro-batch only when there is one and a full one
        self.drop_last = drop_last and n > batch_size > 0 and n % batch_size != 0
        self.micro_batches = n // batch_size if self.drop_last else math.ceil(n / batch_size)
        self._schedule: tuple[int, int, int] | None = None  # (warmup, accumulate, epochs)
        self._plan: dict[int, list[Chunk]] | None = None

    def schedule(self, warmup: int, accumulate: int, epochs: int) -> None:
        """Fuse micro-batches as stock Ultralytics accumulates them (step_plan), from the next epoch iterated on."""
        self._schedule, self._plan = (warmup, accumulate, epochs), None

    def chunks(self, epoch: int) -> list[Chunk]:
        """The chunks of one epoch (one micro-batch each, all stepping, without a schedule)."""
        if self._schedule is None:
            return [Chunk(i, i + 1, True, i + self.micro_batches * epoch) for i in range(self.micro_batches)]
        if self._plan is None or epoch not in self._plan:  # planned from the first epoch trained (resume: its own)
            warmup, accumulate, epochs = self._schedule
            start = epoch if self._plan is not None else min(epoch, self.epoch)
            self._plan = step_plan(self.micro_batches, start, max(epochs, epoch + 1), warmup, accumulate)
        return self._plan[epoch]

    def __len__(self) -> int:
        """Batches of the epoch to be iterated next: its micro-batches, or with a schedule its chunks (a warm-up
        epoch has more, smaller ones; the progress bar asks per epoch, compat.progress_total)."""
        return len(self.chunks(self.epoch))

    def reset(self) -> None:
        """Nothing to rebuild (Ultralytics calls it when closing mosaic)."""

    def __iter__(self):
        images, labels = self.dataset.images, self.dataset.labels
        n = len(self.dataset)
        if self.augment is None:
            for start in range(0, n, self.batch_size):
                x = resize_like_validation(images[start : start + self.batch_size], self.size)
                yield {"img": x.expand(-1, 3, -1, -1).contiguous(), "cls": labels[start : start + self.batch_size]}
            return
        g = torch.Generator(device=images.device)
        g.manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(n, generator=g, device=images.device)
        draws = self.augment.draw(n, g, images.device)  # per position in the epoch: any chunking augments alike
        b = self.batch_size
        last = b if self.drop_last else n - (self.micro_batches - 1) * b  # the epoch's last micro-batch
        for chunk in self.chunks(self.epoch):
            span = slice(chunk.start * b, chunk.stop * b)
            idx = order[span]
            weight = torch.full((len(idx),), 1 / b, device=images.device)
            micro = [b] * (chunk.stop - chunk.start)
            if chunk.stop == self.micro_batches and last != b:
                weight[-last:], micro[-1] = 1 / last, last
            x = self.augment.apply(images[idx], {k: v[span] for k, v in draws.items()})
            batch = {"img": x.expand(-1, 3, -1, -1).contiguous(), "cls": labels[idx]}
            yield {**batch, "weight": weight, "chunk": chunk, "micro": tuple(micro)} if self._schedule else batch
        self.epoch += 1


def load_split(path: str | Path, args, names: dict[int, str], mode: str, device: torch.device) -> MemoryDataset:
    """The images Ultralytics would use for this split (its fraction, its class indices), decoded into memory."""
    split = "train" if mode == "train" else args.split
    listing = ClassificationDataset(str(path), args, augment=False, prefix=split, names=names)
    check_all_images_used(listing, path, args.fraction, split)
    files = [s[0] for s in listing.samples]
    if not files:
        raise DataError(f"{path}: no images in the {mode} split")
    images = torch.from_numpy(decode(files)).to(device)
    labels = torch.tensor([s[1] for s in listing.samples], dtype=torch.int64, device=device)
    return MemoryDataset(images, labels, files)
