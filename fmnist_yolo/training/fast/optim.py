"""The optimizers a captured step can replay: Ultralytics' MuSGD and torch's SGD with lr and momentum read from device
tensors, the same updates to rounding (tests/test_fast.py compares them step by step with the originals)."""

from __future__ import annotations

import torch
from ultralytics.optim.muon import MuSGD

from ... import compat


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
            momentum.fill_(group["momentum"])  # both twins' groups have one (SGD's default is 0)

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
