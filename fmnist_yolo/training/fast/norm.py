"""BatchNorm per micro-batch of a fused chunk (one grouped normalisation), and layouts Inductor can train."""

from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


def micro_groups(sizes: list[int] | tuple[int, ...], device) -> torch.Tensor:
    """(B, G) one-hot assignment of a chunk's images to its G micro-batches of `sizes` images, in order."""
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return F.one_hot(groups, len(sizes)).float().to(device)


def grouped_batch_norm(bn: nn.Module, x: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm of each micro-batch of `x` on its own, in one pass of tensor operations.

    `assign` is (B, G): image i belongs to micro-batch g. Each micro-batch is normalised by its own mean and
    (biased) variance, as a separate forward of it would; the running statistics take the G updates stock's
    separate forwards make, in order, in closed form: r <- (1 - m)^G r + sum_g m (1 - m)^(G - 1 - g) s_g, with the
    unbiased variance. Shapes depend on B and G only, so a compiled model or a CUDA graph sees the same operations
    for every chunk of one composition, and nothing reads a value on the host. Computed in fp32 under autocast too
    (the statistics of stock's BatchNorm are fp32).
    """
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        n = assign.sum(0) * (x.shape[2] * x.shape[3])  # values per channel in each micro-batch, (G,)
        mean = (assign.T @ xf.sum((2, 3))) / n[:, None]  # (G, C)
        xc = xf - (assign @ mean)[:, :, None, None]
        var = (assign.T @ xc.square().sum((2, 3))) / n[:, None]  # biased, as the normalisation uses
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        y = xc * (assign @ scale)[:, :, None, None]
        if bn.bias is not None:
            y = y + bn.bias[:, None, None]
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                g, m = assign.shape[1], bn.momentum
                weight = m * (1 - m) ** torch.arange(g - 1, -1, -1, device=x.device, dtype=torch.float32)
                unbiased = var * (n / (n - 1).clamp(min=1))[:, None]
                bn.running_mean.mul_((1 - m) ** g).add_(weight @ mean)
                bn.running_var.mul_((1 - m) ** g).add_(weight @ unbiased)
                bn.num_batches_tracked.add_(g)
    return y.to(x.dtype)


class MicroBatchNorm:
    """BatchNorm over each micro-batch of a fused chunk, as stock's separate forward passes normalise.

    Installed on the training model's BatchNorm layers only (the EMA, validation and checkpoints keep plain ones).
    After `use(sizes)` with G > 1 micro-batches, each layer normalises each micro-batch on its own and updates its
    running statistics once per micro-batch, in order (grouped_batch_norm, or a call per micro-batch on a CPU); the
    layers between see the whole chunk at once, and are per image anyway. So a fused chunk
    computes what stock's micro-batches compute. `detached()` takes the layers back to plain for a deep copy.
    """

    def __init__(self, model: nn.Module, mode: str = "auto"):
        self.sizes: tuple[int, ...] = ()  # the chunk's micro-batch sizes, on the host
        self.assign: torch.Tensor | None = None  # their (B, G) assignment on the device; None: plain BatchNorm
        self.mode = mode  # "auto" (by device, see _forward), "grouped" or "split"
        self._assigns: dict[tuple[int, ...], torch.Tensor] = {}  # made once per composition (6 in a 100-epoch plan)
        self._layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if any(m.momentum is None for m in self._layers):  # a cumulative average has no closed form per group
            raise ConfigError("fast=True per-micro-batch BatchNorm needs BatchNorm momentum; use fused_bn=True")
        self._install()

    def use(self, sizes) -> None:
        """Normalise the next chunks as micro-batches of these sizes (None or one size: as one batch). Host-side:
        the device tensor of a composition is made the first time it is seen, so a step copies nothing."""
        self.sizes = tuple(sizes or ())
        if len(self.sizes) < 2:
            self.assign = None
            return
        if self.sizes not in self._assigns:
            self._assigns[self.sizes] = micro_groups(self.sizes, self._layers[0].weight.device)
        self.assign = self._assigns[self.sizes]

    def _install(self) -> None:
        for m in self._layers:
            m.forward = partial(self._forward, m)  # an instance attribute: the module's class stays stock's

    @contextlib.contextmanager
    def detached(self):
        """Within: the layers are plain BatchNorm, so a deep copy of the model (a new EMA) carries none of this."""
        for m in self._layers:
            del m.forward
        try:
            yield
        finally:
            self._install()

    def _forward(self, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Per micro-batch, the cheaper way for the device: one grouped normalisation on a GPU and in a compiled
        model (few kernels; no Python list for Dynamo to guard on), a BatchNorm call per micro-batch on a CPU, where
        the fused native kernel beats the grouped one's extra passes (1.13x against 1.26x a fused step on a 2-core
        Zen 4: benchmarks/RESULTS.md, "BatchNorm per micro-batch")."""
        plain = type(bn).forward
        if not bn.training or self.assign is None:
            return plain(bn, x)
        if self.mode == "grouped" or (self.mode == "auto" and (x.is_cuda or torch.compiler.is_compiling())):
            return grouped_batch_norm(bn, x, self.assign)
        return torch.cat([plain(bn, part) for part in x.split(self.sizes)])


def nchw_where_degenerate(model: nn.Module, size: int) -> list[str]:
    """Convolution weights that see a size-1 feature map at `size` px, put back in NCHW; their names.

    At 32 px yolo11n-cls's later layers (model.8 on) see 1x1 maps. A size-1 tensor is "contiguous" in NCHW and
    channels_last alike, so cuDNN returns such a layer's weight gradient in NCHW, while Inductor planned for the
    weight's own channels_last layout and fails its stride assertion (`expected size 64==64, stride 9==1`). With
    these weights in NCHW the two agree; the other layers keep channels_last.
    """
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str, args: tuple) -> None:  # a pre-hook that returns something replaces the arguments
        seen.setdefault(name, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: record(name, args))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    changed = []
    for name, m in model.named_modules():
        if name in seen and min(seen[name][-2:]) == 1 and not m.weight.is_contiguous():
            m.weight.data = m.weight.data.contiguous()
            changed.append(name)
    return changed
