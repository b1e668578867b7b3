"""One optimizer step as device work, captured on CUDA as one graph per chunk shape.

Forward, ChunkLoss, backward, clipping, the optimizer and the EMA run as one function, `DeviceStep.run`. What changes
from step to step and is decided on the host (stock's warm-up and schedule give each step its lr and momentum; the EMA
its decay) is written into small device tensors before the step (`prepare`), so the step itself reads nothing from
the host and the host waits for nothing. On CUDA each chunk composition (images, micro-batch sizes, whether it steps)
runs eagerly the first time, is captured as a CUDA graph the second, and is replayed from then on: a 64-image step of
yolo11n-cls launches ~2,000 kernels from Python, which a replay launches as one. On a CPU the same function runs
eagerly every time, so the suite covers it.

The optimizers are optim.py's device-tensor twins of Ultralytics' MuSGD and torch's SGD. Other optimizers (AdamW,
Adam, ...) step eagerly inside the same function, uncaptured. On CUDA the captured step trains in bf16: fp16's loss
scale (GradScaler) reads `found_inf` on the host every step.
"""

from __future__ import annotations

import contextlib
import os

import torch
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from ... import compat
from .optim import DeviceHyper

CLIP_NORM = 10.0  # stock's gradient clipping (BaseTrainer.optimizer_step, Ultralytics 8.4.190)


class DeviceStep:
    """The training model's `loss` while a fast run trains: the whole optimizer step (see the module docstring).

    Ultralytics' loop calls `self.model(batch)` (which calls `model.loss(batch)`), then `backward()` on what it
    returns and `optimizer_step()`: here the first does all of it and returns the loss detached from the graph plus
    a zero that carries a trivial backward; MemoryTrainer.optimizer_step then only returns.
    """

    def __init__(self, trainer, capture: bool):
        self.trainer = trainer
        self.model = unwrap_model(trainer.model)
        self.capture = capture  # CUDA graphs (only on CUDA with a device-tensor optimizer and no loss scale)
        self._anchor = torch.zeros((), device=trainer.device, requires_grad=True)  # takes the loop's backward()
        self._decay = torch.zeros((), device=trainer.device)  # the EMA's decay at this step
        self._keep = torch.zeros((), device=trainer.device)  # 1 - decay, computed on the host in double as stock
        self._ema_pairs: tuple[list, list] | None = None
        self._seen: set[tuple] = set()
        self._graphs: dict[tuple, tuple] = {}  # key -> (graph, static batch, static outputs, gradients captured)
        self._broken: list[str] = []  # a capture the runtime refused: eager from then on, said once
        self._side = None  # the CUDA stream of the eager warm-up steps, made on first need
        self.install()

    def install(self) -> None:
        """Become the training model's `loss` (an instance attribute: the model's class stays Ultralytics')."""
        self.model.loss = self.loss

    @contextlib.contextmanager
    def detached(self):
        """Within: the model's own `loss`, so that a deep copy of the model (a new EMA) carries none of this."""
        del self.model.loss
        try:
            yield
        finally:
            self.install()

    def reset(self) -> None:
        """Forget the captured graphs: the optimizer's state, the EMA or the gradients are new tensors (a resume, a
        NaN recovery, an OOM retry). The next steps run eagerly, then are captured again."""
        self._graphs.clear()
        self._seen.clear()
        self._ema_pairs = None

    def loss(self, batch: dict, preds=None):
        """Ultralytics' `model.loss`: outside training, the model's own; in training, the whole step."""
        if preds is not None or not self.model.training or not torch.is_grad_enabled():
            return type(self.model).loss(self.model, batch, preds)
        chunk = self.trainer._chunk
        steps = chunk is None or chunk.steps
        self.prepare(steps)
        key = (tuple(batch["img"].shape), self.trainer._micro_sizes, steps)
        capturing = self.capture and not self._broken
        if capturing and key in self._seen:
            loss, items = self._replay(key, batch, steps)
        else:
            self._seen.add(key)
            loss, items = self._warm(batch, steps) if capturing else self.run(batch, steps)
        return loss + self._anchor, items

    def _warm(self, batch: dict, steps: bool):
        """A composition's first step, eager, on a side stream (as PyTorch's whole-network capture recipe warms up):
        the lazily made state (gradients, momentum buffers, library workspaces) exists before the capture."""
        if self._side is None:
            self._side = torch.cuda.Stream(self.trainer.device)
        side, main = self._side, torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self.run(batch, steps)
        main.wait_stream(side)
        return out

    def prepare(self, steps: bool) -> None:
        """Host side, outside any graph: this step's lr and momentum, and the EMA's update count and decay."""
        t = self.trainer
        if not steps:
            return
        if isinstance(t.optimizer, DeviceHyper):
            t.optimizer.load_hyper()
        if t.ema and t.ema.enabled:
            t.ema.updates += 1
            d = t.ema.decay(t.ema.updates)
            self._decay.fill_(d)
            self._keep.fill_(1 - d)

    def run(self, batch: dict, steps: bool):
        """The step's device work: forward, ChunkLoss, backward and, where the plan steps, clip, optimizer, EMA."""
        t, model = self.trainer, self.model
        loss, items = model.criterion(model.forward(batch["img"]), batch)
        with torch.autocast(t.device.type, enabled=False):
            t.scaler.scale(loss.sum()).backward()
            if steps:
                t.scaler.unscale_(t.optimizer)
                torch.nn.utils.clip_grad_norm_(t.model.parameters(), max_norm=CLIP_NORM)
                t.scaler.step(t.optimizer)
                t.scaler.update()
                t.optimizer.zero_grad(set_to_none=False)  # the gradients stay the tensors a graph captured
                if t.ema and t.ema.enabled:
                    self._ema_update()
        return loss.detach(), items

    def _ema_update(self) -> None:
        """ModelEMA.update's blend, ema = d ema + (1 - d) model, with d from a device tensor (`prepare`)."""
        if self._ema_pairs is None:
            msd = self.model.state_dict()
            pairs = [(v, msd[k]) for k, v in self.trainer.ema.ema.state_dict().items() if v.dtype.is_floating_point]
            self._ema_pairs = [e for e, _ in pairs], [m for _, m in pairs]
        ema, current = self._ema_pairs
        torch._foreach_mul_(ema, self._decay)
        torch._foreach_add_(ema, torch._foreach_mul(current, self._keep))

    def _replay(self, key: tuple, batch: dict, steps: bool):
        """This composition's graph (captured on first need), its inputs written, replayed."""
        params = list(self.model.parameters())
        entry = self._graphs.get(key)
        if entry is not None and any(p.grad is not g for p, g in zip(params, entry[3])):
            self.reset()  # someone replaced the gradients (zero_grad(set_to_none=True)): the graph writes stale ones
            self._seen.add(key)
            return self._warm(batch, steps)
        if entry is None:
            static = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
            try:
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.trainer.amp, cache_enabled=False):
                        out = self.run(static, steps)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.set_stream(main)  # a failed capture_end leaves the capture stream current
                raise  # Ultralytics' OOM retry, not a refused capture
            except RuntimeError as e:  # the eager step computes the same
                torch.cuda.set_stream(main)
                compat.capture_failed("the training step", e, self._broken)
                return self.run(batch, steps)
            entry = self._graphs[key] = (graph, static, out, [p.grad for p in params])
        graph, static, (loss, items), _ = entry
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                static[k].copy_(v)
        graph.replay()
        return loss.clone(), {k: type(v)(v.value.clone()) for k, v in items.items()}


CAPTURE_ENV = "FMNIST_YOLO_CAPTURE"  # "0": never capture the step (the eager step computes the same, slower)


def capturable(trainer) -> str | None:
    """None where the step can be captured on this run's device, else why not (said once at the start)."""
    if trainer.device.type != "cuda":
        return "not on CUDA"
    if os.environ.get(CAPTURE_ENV) == "0":
        return f"{CAPTURE_ENV}=0"
    if not isinstance(trainer.optimizer, DeviceHyper):
        return f"{type(trainer.optimizer).__name__} has no device-tensor step here (MuSGD and SGD have)"
    return None


def log_capture(trainer, reason: str | None) -> None:
    """One line: whether the step replays as a CUDA graph, and why not where it does not."""
    if trainer.device.type == "cuda":
        LOGGER.info("fast=True: each optimizer step replays as one CUDA graph per chunk shape" if reason is None
                    else f"fast=True: the optimizer step runs eagerly ({reason})")  # fmt: skip
