"""`MemoryTrainer`: Ultralytics' classification trainer with the fast path's loaders, chunks and step.

One optimizer step, as Ultralytics' loop runs it here: the loader yields a chunk (augmented on the device),
`preprocess_batch` hands its micro-batch assignment to BatchNorm, the model's criterion is ChunkLoss, and
`optimizer_step` steps only where stock steps, with stock's warm-up lr and momentum. Every method overridden or
attribute relied on is registered in compat.SEAMS and compat.LOOP_CONTRACT, where tests/test_compat.py watches it.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import torch
from ultralytics.data.augment import classify_transforms
from ultralytics.models.yolo.classify import ClassificationValidator
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from ... import compat
from ...config import DEFAULTS
from ..args import check_fast
from ..stock_trainer import Trainer
from .augment import Augment
from .data import VAL_BATCH, MemoryDataset, MemoryLoader, load_split
from .loss import ChunkLoss, DeviceLoss
from .norm import MicroBatchNorm, nchw_where_degenerate
from .optim import device_optimizer
from .plan import Chunk
from .step import DeviceStep, capturable, log_capture

BF16_PROBE = (2, 4)  # untimed and timed passes per precision: a few seconds at a CPU run's start


def cpu_precision_probe(
    model: torch.nn.Module, size: int, images: int = 64, probe: tuple[int, int] = BF16_PROBE
) -> dict:
    """ms per forward and backward of a copy of `model` on `images` `size`-px images (a step's chunk), in fp32 and
    under bf16 autocast, interleaved (ABAB...) so that the host's drift falls on both. bf16 is faster than fp32 on
    some CPUs and slower on others (benchmarks/RESULTS.md, "amp=bf16 on this CPU"): only a measurement on the CPU
    at hand tells."""
    import copy
    import time

    n, (warm, timed) = images, probe
    net = copy.deepcopy(model).train()  # its BatchNorm statistics and gradients are the copy's
    p = next(net.parameters())
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(p.device)
    x = x.to(memory_format=torch.channels_last) if p.dim() == 4 and not p.is_contiguous() else x
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(warm + timed):
        for name in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                out = net(x)
            (out[0] if isinstance(out, (list, tuple)) else out).float().sum().backward()
            if i >= warm:
                times[name].append(time.perf_counter() - t0)
    return {name: round(1e3 * sorted(t)[len(t) // 2], 2) for name, t in times.items()}


class DeviceValidator(ClassificationValidator):
    """Ultralytics' validator whose per-batch results stay on the device, moved to the host once per validation.

    Stock copies each batch's top-5 and labels to the host (a synchronisation per batch on a GPU); the metrics are
    computed from the same tensors either way.
    """

    def update_metrics(self, preds: torch.Tensor, batch: dict) -> None:
        n5 = min(len(self.names), 5)
        self.pred.append(preds.argsort(1, descending=True)[:, :n5].type(torch.int32))  # as stock, less .cpu()
        self.targets.append(batch["cls"].type(torch.int32))

    def get_stats(self) -> dict[str, float]:
        """Stock's metrics, after one move of all batches' results to the host."""
        self.pred = [torch.cat(self.pred).cpu()] if self.pred else []
        self.targets = [torch.cat(self.targets).cpu()] if self.targets else []
        return super().get_stats()


class MemoryTrainer(Trainer):
    """ClassificationTrainer whose loaders serve a pre-decoded in-memory split, augmented in batches on the device.

    Stock's optimizer, steps, gradient scale, warm-up and learning rates (see the module docstring): the loop runs one
    iteration per fused chunk, and `optimizer_step` steps where stock does, with stock's warm-up values.
    """

    validator_class = DeviceValidator
    _STEP_ALWAYS = -sys.maxsize  # loop's `ni - last_opt_step >= accumulate` always true: the plan decides the steps

    def __init__(self, *args, fused_bn: bool = DEFAULTS.fused_bn, device_step: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_bn = fused_bn  # True: one BatchNorm over each chunk (faster; not stock's per-micro-batch statistics)
        self.device_step = device_step and not self.args.compile  # False: stock's optimizer_step (the tests' reference)
        if caveat := check_fast(self.args.device, self.args.time, self.args.auto_augment):  # train's rule, again
            LOGGER.warning(caveat)  # for a resume and the Python API, which reach here without resolve_args
        if self.device.type == "cpu":  # Ultralytics leaves a core idle for loader workers that this path does not use
            torch.set_num_threads(os.cpu_count() or 1)
        self.add_callback("on_train_epoch_start", lambda t: setattr(t.train_loader, "epoch", t.epoch))
        self.add_callback("on_train_epoch_start", MemoryTrainer._start_epoch_loss)
        # first: the integrations' and the user's on_train_epoch_end callbacks (added before this) read tloss too
        self.callbacks["on_train_epoch_end"].insert(0, MemoryTrainer._end_epoch)
        self.add_callback("on_pretrain_routine_end", MemoryTrainer._start_plan)
        self._splits: dict[str, MemoryDataset] = {}
        self._chunk: Chunk | None = None
        self._micro_sizes: tuple[int, ...] = ()  # the chunk's micro-batch sizes (a captured step's key)
        self._micro_bn: MicroBatchNorm | None = None
        self._step: DeviceStep | None = None  # the whole optimizer step as device work (step.py); None under compile
        self.stock_accumulate, self.stock_warmup = 1, 0
        self._epoch_loss: tuple[torch.Tensor | float, int] = (0.0, 0)  # this epoch's sum of micro-batch losses, count

    def get_dataloader(self, dataset_path, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        key = f"{mode}:{dataset_path}"
        if key not in self._splits:
            self._splits[key] = load_split(dataset_path, self.args, self.data["names"], mode, self.device)
            LOGGER.info(f"fast loader: {len(self._splits[key])} {mode} images of {dataset_path} in memory "
                        f"({self._splits[key].images.nbytes / 1e6:.0f} MB, {self.device})")  # fmt: skip
        size = int(self.args.imgsz)
        if mode == "train":
            # stock drops the short last micro-batch when compiling (ClassificationTrainer.get_dataloader): one shape
            return MemoryLoader(self._splits[key], batch_size, size, Augment.from_args(self.args), self.args.seed,
                                drop_last=bool(self.args.compile))  # fmt: skip
        unwrap_model(self.model).transforms = classify_transforms(size=size)  # for best.pt's predictor, as stock
        return MemoryLoader(self._splits[key], max(batch_size, VAL_BATCH), size, None)

    def setup_model(self):
        """Ultralytics' model, in channels_last on CPU too unless `channels_last=False`.

        Ultralytics 8.4 applies channels_last on CUDA only ("no benefit on CPU"); on a CPU the fast path and the
        model train faster in it (benchmarks/RESULTS.md, "Throughput and the profile of a MuSGD step"). The stock
        loader cannot feed that speed, so only this path takes it. The same computation to rounding; checkpoints are
        written NCHW as ever.
        """
        ckpt = super().setup_model()
        if self.device.type == "cpu" and self.args.channels_last is not False:
            self.model = self.model.to(memory_format=torch.channels_last)
            self._asked_channels_last, self.args.channels_last = self.args.channels_last, None  # no "ignored" warning
        return ckpt

    def build_optimizer(self, *args, **kwargs):
        """Stock's choice of optimizer and groups, as its device-tensor twin where it has one (step.py)."""
        optimizer = super().build_optimizer(*args, **kwargs)
        return device_optimizer(optimizer) if self.device_step else optimizer

    def _build_train_pipeline(self):
        """Stock's loaders, accumulation and optimizer, then the loader fuses what stock would accumulate."""
        super()._build_train_pipeline()
        if self._step is not None:  # an OOM retry: a new optimizer and loader, so new graphs
            self._step.reset()
        loader = self.train_loader
        self.stock_accumulate = self.accumulate
        self.stock_warmup = super()._get_warmup_iterations(loader.micro_batches)
        loader.schedule(self.stock_warmup, self.stock_accumulate, self.epochs)
        loader.epoch = self.start_epoch
        self.accumulate = self._STEP_ALWAYS

    def _start_plan(self) -> None:
        """After a resume has set start_epoch: plan from there, and sum the losses of fused micro-batches."""
        self.train_loader.schedule(self.stock_warmup, self.stock_accumulate, self.epochs)
        self.train_loader.epoch = self.start_epoch
        if hasattr(self, "_asked_channels_last"):  # the argument as given, for the checkpoints' train_args
            self.args.channels_last = self._asked_channels_last
        unwrap_model(self.model).criterion = ChunkLoss()  # training model only: checkpoints strip the criterion
        if self.args.compile and self.device.type == "cuda":  # review finding 8: Inductor's stride assertion
            nchw_where_degenerate(unwrap_model(self.model), int(self.args.imgsz))
        self._choose_cpu_precision()  # on the plain model, before MicroBatchNorm
        if not self.fused_bn:  # after the EMA's copy was taken: the EMA stays plain
            self._micro_bn = MicroBatchNorm(unwrap_model(self.model))
        if self.device_step:
            self._start_device_step()

    def _start_device_step(self) -> None:
        """The whole step as device work, captured on CUDA where it can be (step.py); there it trains in bf16, since
        fp16's loss scale reads the host every step. The precision used goes to `self.precision`, which the run's
        record keeps."""
        reason = capturable(self)
        if reason is None and self.amp and self.args.amp != "bf16":
            if not torch.cuda.is_bf16_supported(including_emulation=False):  # Ultralytics' autocast needs it native
                reason = "fp16's loss scale syncs the host each step, and this GPU has no native bf16"
            elif self.resume:  # a run that trained in fp16 goes on in fp16, eagerly
                reason = "a resumed fp16 run: its loss scale (GradScaler) reads the host every step"
            else:
                self.precision = {"asked": "fp16", "used": "bf16", "why": "the captured step: fp16's loss scale "
                                  "(GradScaler) reads the host every step"}  # fmt: skip
                self.args.amp = "bf16"
                self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        if reason is None and self.scaler.is_enabled():  # whatever the path: a loss scale cannot be captured
            reason = "GradScaler reads the host every step"
        log_capture(self, reason)
        self._step = DeviceStep(self, capture=reason is None)

    def _choose_cpu_precision(self) -> None:
        """amp=bf16 on a CPU: kept where bf16 autocast trains this model faster than fp32 here, else fp32 (a
        measurement of a few seconds, `cpu_precision_probe`); the choice and its figures go to `self.precision`,
        which the run's record keeps. A CPU without native bf16 trains in fp32 (compat.bf16_on_cpu says so)."""
        if self.device.type != "cpu" or self.args.amp != "bf16" or self.resume:  # a resume keeps the run's choice
            return
        if not compat.cpu_has_bf16():
            self.precision = {"asked": "bf16", "used": "fp32", "why": "no native bf16 on this CPU"}
            return
        images = max(self.batch_size, int(self.args.nbs))  # a step's fused chunk
        ms = cpu_precision_probe(unwrap_model(self.model), int(self.args.imgsz), images)
        used = "bf16" if ms["bf16"] < ms["fp32"] else "fp32"
        self.precision = {"asked": "bf16", "used": used, "ms_per_pass": ms, "images": images}
        LOGGER.info(f"amp=bf16 on this CPU: {ms['bf16']:.0f} ms a forward and backward in bf16 against "
                    f"{ms['fp32']:.0f} in fp32 ({images} images): training in {used}")  # fmt: skip
        if used == "fp32":
            self.args.amp, self.amp = False, False

    def label_loss_items(self, loss_items=None, prefix="train"):
        """Stock's, with each DeviceLoss read exactly (once an epoch: results.csv, the loggers)."""
        if loss_items is not None:
            loss_items = {k: v.exact() if isinstance(v, DeviceLoss) else v for k, v in loss_items.items()}
        return super().label_loss_items(loss_items, prefix)

    def _do_train(self):
        """Ultralytics' loop, its progress bar counting this epoch's chunks (compat.progress_total)."""
        with compat.progress_total(lambda: len(self.train_loader)):  # the epoch's own number of chunks
            return super()._do_train()

    def _load_checkpoint_state(self, ckpt):
        """Stock's, with the training model's BatchNorm layers plain while it runs: a NaN recovery rebuilds the EMA
        as a deep copy of the training model, which would otherwise pickle MicroBatchNorm into every checkpoint."""
        with contextlib.ExitStack() as plain:
            for part in (self._micro_bn, self._step):
                if part is not None:
                    plain.enter_context(part.detached())
            super()._load_checkpoint_state(ckpt)
        if self._step is not None:  # new weights' optimizer state and EMA: new graphs
            self._step.reset()

    def _get_warmup_iterations(self, num_batches):
        return 0  # the loop's per-batch warm-up is off: optimizer_step applies stock's, per micro-batch index

    def preprocess_batch(self, batch):
        """The chunk's plan (does it step? with which warm-up lr and momentum?) and its micro-batches, on the host."""
        self._chunk = chunk = batch.pop("chunk", None)
        self._micro_sizes = tuple(batch.pop("micro", None) or ())
        if self._micro_bn is not None:
            self._micro_bn.use(self._micro_sizes)
        if chunk is not None and chunk.steps and self.stock_warmup:
            self._warmup(chunk.ni)
        return batch  # already on the device

    def _start_epoch_loss(self) -> None:
        self._epoch_loss = (0.0, 0)

    def _end_epoch(self) -> None:
        """The epoch's logged loss and lr as stock's loop leaves them (results.csv, the loggers, callbacks)."""
        self._end_epoch_loss()
        last = (self.epoch + 1) * self.train_loader.micro_batches - 1  # the epoch's last micro-batch, stock's ni
        if self.stock_warmup and last <= self.stock_warmup:
            # stock's warm-up sets lr and momentum at every micro-batch, stepping or not; here the last stepping
            # chunk did, so where a step straddles the epoch's end they stood a few increments short
            # (0.00999418 against stock's 0.00999709 after the default recipe's epoch 1). The next step sets its own.
            self._warmup(last)
            self.lr = {f"lr/pg{i}": x["lr"] for i, x in enumerate(self.optimizer.param_groups)}

    def _end_epoch_loss(self) -> None:
        """The epoch's training loss as stock's loop averages it: over micro-batches, not over this loop's chunks.

        Ultralytics' running mean weighs every iteration alike. Here an iteration is a chunk of 1-4 micro-batches
        during warm-up (more, smaller chunks early in the epoch, when the loss is highest), so that mean overweighs
        the epoch's start: three fast runs of the default recipe recorded 1.70-1.71 at epoch 1 against stock's 1.58,
        and agreed with it within seed noise from epoch 2. After warm-up every chunk but an epoch's last holds the
        same number of micro-batches, and the two means nearly agree. Runs first among the on_train_epoch_end
        callbacks, so results.csv, the loggers and user callbacks all see this mean; the progress bar shows the
        chunks'.
        """
        total, count = self._epoch_loss
        if count and self.tloss:
            (name,) = self.tloss  # ChunkLoss logs one item
            self.tloss = {name: DeviceLoss(total / count)}

    def optimizer_step(self):
        """Step where stock steps (the device step has already stepped inside `self.model(batch)`)."""
        if self.loss is not None:  # the chunk's loss: the sum of its micro-batches' mean losses (ChunkLoss)
            total, count = self._epoch_loss
            self._epoch_loss = (total + self.loss.detach(), count + max(len(self._micro_sizes), 1))
        chunk = self._chunk
        if self._step is not None or (chunk is not None and not chunk.steps):
            return  # stock adds this gradient to the next micro-batches' before stepping
        super().optimizer_step()

    def _warmup(self, ni: int) -> None:
        """Stock's warm-up of lr and momentum at global micro-batch `ni` (BaseTrainer._do_train, 8.4.190)."""
        nw, a = self.stock_warmup, self.args
        for x in self.optimizer.param_groups:
            target = x["initial_lr"] * self.lf(self.epoch)
            if ni <= nw:
                start = a.warmup_bias_lr if x.get("param_group") == "bias" else 0.0
                x["lr"] = float(np.interp(ni, [0, nw], [start, target]))
                if "momentum" in x:
                    x["momentum"] = float(np.interp(ni, [0, nw], [a.warmup_momentum, a.momentum]))
            else:  # after warm-up: where stock's last warm-up micro-batch left them (the scheduler's lr)
                x["lr"] = target
                if "momentum" in x:
                    x["momentum"] = a.momentum
