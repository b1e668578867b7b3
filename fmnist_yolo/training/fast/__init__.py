"""The fast data path (`fast=True`): the split decoded once into one uint8 tensor, augmented in batches on the device.

`MemoryTrainer` is Ultralytics' ClassificationTrainer with the data loaders replaced: model, optimizer, schedule,
EMA, validator, checkpoints, results.csv and callbacks stay Ultralytics'. Selected by `fast=True`, and by default
wherever it serves (training/args.py, `choose_loader`).

It trains the recipe it is given. Stock Ultralytics adds the gradients of `accumulate = nbs / batch` micro-batches
(each a mean over `batch` images) before each optimizer step, and ramps `accumulate` from 1 during warm-up. The fast
loader replays that schedule (`step_plan`) and fuses the micro-batches of one step into one forward pass whose loss
is their sum (`ChunkLoss`), so the optimizer, the number of steps, the gradient, the warm-up and the learning rate
of every step are stock's. BatchNorm normalises each micro-batch of the chunk on its own (`MicroBatchNorm`), as
stock's separate forward passes do. What differs: the augmentations are batched re-implementations on tensors
(stock's run on PIL images: the crop's resize differs by rounding; RandAugment, a policy drawn per image, gives PIL's
pixels exactly), and the AugMix and AutoAugment policies are not reproduced.

Device-agnostic: the split, the augmentation draws and the validator's results live on the training device, so the
GPU path runs the same functions the CPU tests cover. On CPU the model trains channels_last, as on CUDA.

In data-flow order: augment.py (the batched augmentation), plan.py (stock's accumulation as chunks), data.py (the
split in memory and its loader), norm.py (BatchNorm per micro-batch), loss.py (the chunk's loss), optim.py (MuSGD
and SGD with lr and momentum in device tensors), step.py (the whole optimizer step as device work, one CUDA graph
per chunk shape on a GPU), loop.py (MemoryTrainer: Ultralytics' trainer around them).
"""

from .augment import CROP_ATTEMPTS, CROP_RATIO, Augment
from .data import VAL_BATCH, MemoryDataset, MemoryLoader, decode, load_split, resize_like_validation
from .loop import DeviceValidator, MemoryTrainer, cpu_precision_probe
from .loss import ChunkLoss, DeviceLoss
from .norm import MicroBatchNorm, grouped_batch_norm, micro_groups, nchw_where_degenerate
from .optim import DeviceMuSGD, DeviceSGD, device_optimizer
from .plan import Chunk, step_plan
from .step import DeviceStep

__all__ = [
    "CROP_ATTEMPTS", "CROP_RATIO", "VAL_BATCH", "Augment", "Chunk", "ChunkLoss", "DeviceLoss", "DeviceMuSGD",
    "DeviceSGD", "DeviceStep", "DeviceValidator", "device_optimizer",
    "MemoryDataset", "MemoryLoader", "MemoryTrainer", "MicroBatchNorm", "cpu_precision_probe", "decode",
    "grouped_batch_norm", "load_split", "micro_groups", "nchw_where_degenerate", "resize_like_validation", "step_plan",
]  # fmt: skip
