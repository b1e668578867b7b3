"""The fast path's optimizer step as one device function (fast/step.py) against today's stock optimizer_step, on
the same chunk, interleaved in one process (issue 27's CPU target: the new step no slower).

    python benchmarks/bench_step.py [--device cpu] [--amp fp32|bf16] [--rounds 8] [--optimizer MuSGD]

Two MemoryTrainers of the default recipe at 100 epochs (batch 16, nbs 64: 64-image chunks of 4 micro-batches, MuSGD
unless --optimizer), one with the device step (`device_step=True`, the default) and one with stock's optimizer_step
(`device_step=False`), each timed on its first 64-image chunk: forward, ChunkLoss, backward, clip, optimizer, EMA.
Blocks alternate ABBA (bench_fidelity.interleaved), so the host's drift falls on both; the medians and their ratio
are printed. On CUDA the device step replays its captured graph.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import ultralytics.engine.trainer as engine
from bench_fidelity import RECIPE, interleaved, report

from fmnist_yolo import compat
from fmnist_yolo.training.fast import MemoryTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--optimizer", default="MuSGD")
    parser.add_argument("--data", default="datasets/fashion-mnist")
    args = parser.parse_args()
    amp = {"fp32": False, "bf16": "bf16"}[args.amp]
    kw = {**RECIPE, "data": args.data, "device": args.device, "amp": amp, "optimizer": args.optimizer,
          "project": tempfile.mkdtemp()}  # fmt: skip
    trainers, batches = {}, {}
    with compat.training():
        for name, device_step in (("device step", True), ("stock step", False)):
            t = MemoryTrainer(overrides={**kw, "name": name.replace(" ", "_")}, device_step=device_step)
            t.callbacks = {event: [f for f in fs if f.__module__.startswith("fmnist_yolo")]
                           for event, fs in t.callbacks.items()}  # fmt: skip
            t._setup_train()
            trainers[name], batches[name] = t, t.preprocess_batch(next(iter(t.train_loader)))
        current: dict = {}

        def step():
            t, batch = current["t"], batches[current["name"]]
            with engine.autocast(torch.bfloat16 if t.args.amp == "bf16" else t.amp, device=t.device.type):
                loss, _ = t.model(batch)
            t.scaler.scale(loss.sum()).backward()
            t.optimizer_step()

        settings = {name: (lambda n=name: current.update(t=trainers[n], name=n)) for name in trainers}
        t = trainers["device step"]
        report(f"optimizer step ({args.amp}, {len(batches['device step']['cls'])} images, {args.optimizer}, "
               f"{t.device})", interleaved(step, settings, args.rounds, per_block=10, warm=3))  # fmt: skip


if __name__ == "__main__":
    main()
