"""What the fast path's fidelity to stock costs, interleaved in one process: BatchNorm per micro-batch
(MicroBatchNorm: one grouped normalisation, a GPU's and a compiled model's way, and one BatchNorm call per
micro-batch, a CPU's) against one BatchNorm over the fused chunk (`fused_bn=True`), and the augmentation with
RandAugment (stock's default `auto_augment`) against without.

    python benchmarks/bench_fidelity.py [--device cpu] [--amp fp32|bf16] [--rounds 8]

The step is the model arm of bench_throughput.py (forward, loss, backward, MuSGD step, clip, EMA) on one fixed
64-image chunk (the default recipe at 100 epochs: batch 16, nbs 64); the augmentation is Augment on 64 images.
The two settings alternate in blocks (ABBA...), so the host's drift, which reaches 25 % within an hour on the
shared CPU VM, falls on both; medians of the blocks and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from fmnist_yolo import compat
from fmnist_yolo.training.fast import Augment, MemoryTrainer

RECIPE = {"model": "yolo11n-cls.yaml", "imgsz": 28, "epochs": 100, "batch": 16, "warmup_epochs": 0, "seed": 0,
          "plots": False, "exist_ok": True}  # fmt: skip


def interleaved(run, settings: dict, rounds: int, per_block: int, warm: int) -> dict[str, list[float]]:
    """ms per call of run() under each setting, block by block in ABBA order."""
    times = {name: [] for name in settings}
    for r in range(rounds):
        for name in list(settings) if r % 2 == 0 else list(settings)[::-1]:
            settings[name]()
            for _ in range(warm):
                run()
            sync()
            t0 = time.perf_counter()
            for _ in range(per_block):
                run()
            sync()
            times[name].append((time.perf_counter() - t0) / per_block * 1e3)
    return times


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def report(what: str, times: dict[str, list[float]]) -> None:
    """Each setting's median ms, and its ratio to the last setting's (the reference)."""
    ref = statistics.median(list(times.values())[-1])
    print(f"{what}:")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:>16} {m:7.1f} ms  {m / ref:.3f}x  (blocks: {[round(x, 1) for x in ts]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--data", default="datasets/fashion-mnist")
    args = parser.parse_args()
    amp = {"fp32": False, "bf16": "bf16"}[args.amp]
    kw = {**RECIPE, "data": args.data, "device": args.device, "amp": amp, "project": tempfile.mkdtemp(), "name": "f"}
    with compat.training():
        t = MemoryTrainer(overrides=kw)
        t.callbacks = {event: [f for f in fs if f.__module__.startswith(("fmnist_yolo", "ultralytics.utils.callbacks"))]
                       for event, fs in t.callbacks.items()}  # fmt: skip
        t._setup_train()
        batch = t.preprocess_batch(next(iter(t.train_loader)))
        micro = [16] * (len(batch["cls"]) // 16)
        t._chunk = None
        dtype = torch.bfloat16 if amp == "bf16" else t.amp
        import ultralytics.engine.trainer as engine

        def step():
            with engine.autocast(dtype, device=t.device.type):
                loss, _ = t.model(batch)
            t.scaler.scale(loss.sum()).backward()
            t.optimizer_step()

        mbn = t._micro_bn

        def use(mode, sizes):
            mbn.mode = mode
            mbn.use(sizes)

        settings = {"grouped": lambda: use("grouped", micro), "split": lambda: use("split", micro),
                    "fused": lambda: use("split", None)}  # fmt: skip
        report(f"training step, BatchNorm ({args.amp}, {len(batch['cls'])} images, {type(t.optimizer).__name__})",
               interleaved(step, settings, args.rounds, per_block=10, warm=3))  # fmt: skip

    images = t.train_loader.dataset.images[:64]
    g = torch.Generator(device=images.device).manual_seed(0)
    aug = {"on": Augment(32, randaugment=True), "off": Augment(32)}
    current = {}
    settings = {"RandAugment": lambda: current.update(a=aug["on"]), "without": lambda: current.update(a=aug["off"])}
    report("augmentation of 64 images", interleaved(lambda: current["a"](images, g), settings, args.rounds, 50, 5))


if __name__ == "__main__":
    main()
