"""A probe run of a trainer on fixed images: stock's ClassificationTrainer and the fast path's MemoryTrainer take the
same images in the same order, without augmentation, for one epoch of optimizer steps from the same initial weights
(tests/test_fast.py's step tests, benchmarks/compare_steps.py)."""

from __future__ import annotations

from unittest import mock

import torch

from fmnist_yolo.training.fast import MemoryDataset, MemoryLoader


class Stop(Exception):
    """Ends a probe run after its first epoch's optimizer steps."""


def probe_args(tmp_path, **kw):
    """A probe run's train arguments: one epoch, batch 16, nbs 64 (4 micro-batches a step), no warm-up, no
    validation, fp32 on the CPU, seeded and deterministic; `kw` overrides any."""
    return {"model": "yolo11n-cls.yaml", "imgsz": 32, "epochs": 1, "batch": 16, "nbs": 64, "warmup_epochs": 0,
            "plots": False, "val": False, "workers": 0, "device": "cpu", "seed": 0, "deterministic": True,
            "project": str(tmp_path), "exist_ok": True, "amp": False, **kw}  # fmt: skip


class NoAugment:
    """No augmentation: the images as stock's fixed batches hold them."""

    def draw(self, n, g, device):
        return {}

    def apply(self, x, r):
        return x[:, None].float() / 255


class FixedLoader:
    """A stock-format loader serving fixed batches in order (a stand-in for Ultralytics' shuffled loader)."""

    num_workers, drop_last = 0, False

    def __init__(self, batches: list[dict]):
        self.batches, self.batch_size = batches, len(batches[0]["cls"])
        self.dataset = self.sampler = range(sum(len(b["cls"]) for b in batches))

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter([dict(b) for b in self.batches])

    def reset(self):
        pass


def stock_class(optimizer) -> type:
    """The optimizer class Ultralytics chose (the fast path steps with its device-tensor twin, a subclass)."""
    return next(c for c in type(optimizer).__mro__ if not c.__module__.startswith("fmnist_yolo"))


def first_epoch_update(trainer_cls, tree, tmp_path, images, labels, **kw):
    """The weights before and after a probe run's first epoch of steps (`images` in order, batch 16, no
    augmentation), the optimizer's class and the last gradient stepped on (before clipping)."""
    from ultralytics.models.yolo.classify import ClassificationTrainer

    x = images.float()[:, None].expand(-1, 3, -1, -1) / 255
    micro = [{"img": i.contiguous(), "cls": c} for i, c in zip(x.split(16), labels.split(16))]

    class Probe(trainer_cls):
        def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
            if mode != "train":
                return super().get_dataloader(dataset_path, batch_size, rank, mode)
            if trainer_cls is ClassificationTrainer:  # stock: the images as micro-batches of 16, in order
                return FixedLoader(micro)
            # fast: the same images fused, placed so that the loader's seeded shuffle serves them in that order
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # seed 0, epoch 0
            placed, placed_labels = torch.empty_like(images), torch.empty_like(labels)
            placed[order], placed_labels[order] = images, labels
            return MemoryLoader(MemoryDataset(placed, placed_labels, []), batch_size, 32, NoAugment())

    seen = {}

    def start(t):
        seen["before"] = {k: v.detach().clone() for k, v in t.model.named_parameters()}
        seen["optimizer"] = stock_class(t.optimizer).__name__

    def end(t):
        seen["after"] = {k: v.detach().clone() for k, v in t.model.named_parameters()}
        raise Stop

    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, *a, **k):  # Ultralytics clips at norm 10 (early steps reach ~200): record before
        parameters = list(parameters)
        seen["grad"] = [p.grad.detach().clone() for p in parameters]
        return clip(parameters, *a, **k)

    trainer = Probe(overrides={"data": str(tree), **probe_args(tmp_path, name=trainer_cls.__name__, **kw)})
    trainer.add_callback("on_train_start", start)
    trainer.add_callback("on_train_epoch_end", end)
    with mock.patch.object(torch.nn.utils, "clip_grad_norm_", recording_clip):
        try:
            trainer.train()
        except Stop:
            return seen
    raise AssertionError("the probe run ended without its first epoch's end")
