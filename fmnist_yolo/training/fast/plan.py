"""Stock Ultralytics' accumulation schedule as chunks: which micro-batches one optimizer step fuses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """Consecutive micro-batches of one epoch, trained in one forward pass."""

    start: int  # first micro-batch (index within the epoch)
    stop: int  # one past the last
    steps: bool  # stock takes an optimizer step after the last one (False: the gradient carries into the next chunk)
    ni: int  # stock's global index of the last micro-batch: the warm-up's lr and momentum at the step are taken here


def step_plan(micro_batches: int, start_epoch: int, epochs: int, warmup: int, accumulate: int) -> dict[int, list]:
    """Stock Ultralytics' accumulation schedule as chunks: epoch -> [Chunk, ...].

    The logic of BaseTrainer._do_train (checked against Ultralytics 8.4.190): micro-batch `ni` (global index) sets
    `accumulate` to round(interp(ni, [0, warmup], [1, accumulate])) while ni <= warmup, and a step follows when
    ni - last_step >= accumulate. `last_step` starts at -1 (also on resume) and runs across epochs, so a step's
    micro-batches can straddle an epoch boundary.
    """
    plan, last, acc = {}, -1, accumulate
    for epoch in range(start_epoch, epochs):
        chunks, start = [], 0
        for i in range(micro_batches):
            ni = i + micro_batches * epoch
            if warmup and ni <= warmup:
                acc = max(1, int(np.interp(ni, [0, warmup], [1, accumulate]).round()))
            if ni - last >= acc:
                chunks.append(Chunk(start, i + 1, True, ni))
                start, last = i + 1, ni
        if start < micro_batches:
            chunks.append(Chunk(start, micro_batches, False, micro_batches * (epoch + 1) - 1))
        plan[epoch] = chunks
    return plan
