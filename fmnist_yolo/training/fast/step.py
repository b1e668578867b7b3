"""One optimizer step as device work, captured on CUDA as one graph per chunk shape.

Forward, ChunkLoss, backward, clipping, the optimizer and the EMA run as one function, `DeviceStep.run`. What changes
from step to step and is decided on the host (stock's warm-up and schedule give each step its lr and momentum; the EMA
its decay) is written into small device tensors before the step (`prepare`), so the step itself reads nothing from
the host and the host waits for nothing. On CUDA each chunk composition (images, micro-batch sizes, whether it steps)
runs eagerly the first time, is captured as a CUDA graph the second, and is replayed from then on: a 64-image step of
yolo11n-cls launches ~2,000 kernels from Python, which a replay launches as one. On a CPU the same function runs
eagerly every time, so the suite covers it.

The optimizers are Ultralytics' (MuSGD) and torch's (SGD), with the per-step numbers read from device tensors: the
same maths (tests/test_fast.py compares them step by step). Other optimizers (AdamW, Adam, ...) step eagerly inside
the same function, uncaptured. On CUDA the captured step trains in bf16: fp16's loss scale (GradScaler) reads
`found_inf` on the host every step.
"""

from __future__ import annotations

import contextlib
import os

import torch
from ultralytics.optim.muon import MuSGD
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from ... import compat

CLIP_NORM = 10.0  # stock's gradient clipping (BaseTrainer.optimizer_step, Ultralytics 8.4.190)


class DeviceHyper:
    """lr and momentum of each parameter group as device tensors, filled from the groups' floats by `load_hyper`.

    A CUDA graph bakes Python numbers into its kernels; a tensor it reads can change between replays. `fill_` passes
    the number as a kernel argument: nothing is copied from host memory and nothing waits.
    """

    _hyper: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def load_hyper(self) -> None:
        """Write each group's current lr and momentum (set on the host by the schedule) into its device tensors."""
        if self._hyper is None:
            device = next(p.device for g in self.param_groups for p in g["params"])
            self._hyper = [(torch.zeros((), device=device), torch.zeros((), device=device)) for _ in self.param_groups]
        for (lr, momentum), group in zip(self._hyper, self.param_groups):
            lr.fill_(group["lr"])
            momentum.fill_(group.get("momentum", 0.0))

    def _groups(self, buffers: tuple[str, ...], muon_buffers: tuple[str, ...] = ()):
        """(lr, momentum, group, its parameters with a gradient) per group, each parameter's momentum buffers made
        (zeros: torch's first SGD step, buf = g, is 0 * m + g) before the first step, so a graph finds them."""
        for (lr, momentum), group in zip(self._hyper, self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                for name in buffers + (muon_buffers if group.get("use_muon") else ()):
                    if self.state[p].get(name) is None:
                        self.state[p][name] = torch.zeros_like(p)
            if params:
                yield lr, momentum, group, params


def _sgd(params, grads, buffers, lr, momentum, weight_decay: float, nesterov: bool) -> None:
    """SGD with momentum (torch's and MuSGD's SGD part), lr and momentum device tensors: buf = m buf + g (+ wd p),
    then p -= lr (g + m buf) with Nesterov, else p -= lr buf."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    if nesterov:
        updates = torch._foreach_mul(buffers, momentum)
        torch._foreach_add_(updates, grads)
    else:
        updates = buffers
    torch._foreach_add_(params, torch._foreach_mul(updates, -lr))


class DeviceSGD(DeviceHyper, torch.optim.SGD):
    """torch's SGD (momentum, Nesterov, weight decay; no dampening) with lr and momentum from device tensors."""

    @torch.no_grad()
    def step(self, closure=None):
        """One step: the update torch.optim.SGD makes, reading lr and momentum from `load_hyper`'s tensors."""
        for lr, momentum, group, params in self._groups(("momentum_buffer",)):
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            _sgd(params, [p.grad for p in params], buffers, lr, momentum, group["weight_decay"], group["nesterov"])


class DeviceMuSGD(DeviceHyper, MuSGD):
    """Ultralytics' MuSGD (8.4.190's step: Muon's orthogonalised update plus SGD's in Muon groups, SGD's elsewhere)
    with lr and momentum from device tensors."""

    @torch.no_grad()
    def step(self, closure=None):
        """One step: the update MuSGD.step makes, reading lr and momentum from `load_hyper`'s tensors."""
        for lr, momentum, group, params in self._groups(("momentum_buffer",), ("momentum_buffer_SGD",)):
            grads = [p.grad for p in params]
            if group["use_muon"]:
                updates = compat.muon_momentum_then_orthogonalise(
                    grads, [self.state[p]["momentum_buffer"] for p in params], momentum, group["nesterov"]
                )
                torch._foreach_add_(params, torch._foreach_mul(updates, -lr * self.muon))
                buffers, sgd_lr = [self.state[p]["momentum_buffer_SGD"] for p in params], lr * self.sgd
            else:
                buffers, sgd_lr = [self.state[p]["momentum_buffer"] for p in params], lr
            _sgd(params, grads, buffers, sgd_lr, momentum, group["weight_decay"], group["nesterov"])


DEVICE_OPTIMIZERS = {MuSGD: DeviceMuSGD, torch.optim.SGD: DeviceSGD}  # stock's class -> its device-tensor twin


def device_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer Ultralytics built, as its device-tensor twin (same groups, same state), or itself when it has
    none (AdamW, Adam, ...): those step eagerly, uncaptured."""
    twin = DEVICE_OPTIMIZERS.get(type(optimizer))
    if twin is None:
        return optimizer
    new = twin.__new__(twin)
    new.__dict__.update(optimizer.__dict__)  # the same param_groups, state and hooks: only the step differs
    return new


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
        self._ema_pairs: tuple[list, list] | None = None
        self._seen: set[tuple] = set()
        self._graphs: dict[tuple, tuple] = {}  # key -> (graph, static batch, static outputs, gradients captured)
        self._broken: list[str] = []  # a capture the runtime refused: eager from then on, said once
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
        if self.capture and not self._broken and key in self._seen:
            loss, items = self._replay(key, batch, steps)
        else:
            self._seen.add(key)
            loss, items = self.run(batch, steps)
        return loss + self._anchor, items

    def prepare(self, steps: bool) -> None:
        """Host side, outside any graph: this step's lr and momentum, and the EMA's update count and decay."""
        t = self.trainer
        if not steps:
            return
        if isinstance(t.optimizer, DeviceHyper):
            t.optimizer.load_hyper()
        if t.ema and t.ema.enabled:
            t.ema.updates += 1
            self._decay.fill_(t.ema.decay(t.ema.updates))

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
        torch._foreach_add_(ema, torch._foreach_mul(current, 1 - self._decay))

    def _replay(self, key: tuple, batch: dict, steps: bool):
        """This composition's graph (captured on first need), its inputs written, replayed."""
        params = list(self.model.parameters())
        entry = self._graphs.get(key)
        if entry is not None and any(p.grad is not g for p, g in zip(params, entry[3])):
            self.reset()  # someone replaced the gradients (zero_grad(set_to_none=True)): the graph writes stale ones
            self._seen.add(key)
            return self.run(batch, steps)
        if entry is None:
            static = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.trainer.amp, cache_enabled=False):
                        out = self.run(static, steps)
            except RuntimeError as e:  # the eager step computes the same
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
