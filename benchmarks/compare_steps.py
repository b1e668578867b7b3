"""Issue 28: does the fast path take stock's steps beyond the first? K optimizer steps of stock's trainer and of the
fast path's on the same training images in the same order (no augmentation, batch 16, nbs 64: 4 micro-batches a
step), from the same initial weights, against a noise floor: stock again with one pixel of one image one grey level
brighter.

    python benchmarks/compare_steps.py [--steps 1 2 4 8] [--optimizer MuSGD] [--data DIR]

Training from scratch is chaotic: a one-level change in one pixel moves the weights' updates by tens of percent
within a few steps, so no two runs that differ anywhere (the fp32 summation order of a fused chunk, MuSGD's bf16)
stay together for long, and at length only statistics over runs can compare loaders (compare_loaders.py). What a
step-level check can show: the fast path's updates part from stock's no faster than that floor does. Prints, per K,
the relative difference of each weight tensor's update after K steps, |u_a - u_b| / |u_b|, as median, 90th percentile
and largest over the tensors that moved.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests/ (the probe harness)
os.environ.setdefault("YOLO_VERBOSE", "False")  # the table, not 3 x len(steps) training logs

from fmnist_yolo.config import TREE  # noqa: E402
from tests.stepprobe import first_epoch_update  # noqa: E402


def update_differences(a: dict, b: dict) -> np.ndarray:
    """Each tensor's update in probe run `a` against run `b`'s, relative to `b`'s (tensors that moved in `b`)."""
    out = []
    for name, before in b["before"].items():
        ub, ua = b["after"][name] - before, a["after"][name] - a["before"][name]
        if ub.norm() > 1e-9:
            out.append(float((ua - ub).norm() / ub.norm()))
    return np.array(out)


def main() -> None:
    import cv2
    from ultralytics.models.yolo.classify import ClassificationTrainer

    from fmnist_yolo.training.fast import MemoryTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="optimizer steps (default 1 2 4 8)")
    ap.add_argument("--optimizer", default="MuSGD", help="MuSGD (every 100-epoch run's; default) or SGD")
    ap.add_argument("--data", type=Path, default=TREE, help="the class-folder tree (default: the default tree)")
    a = ap.parse_args()
    root = a.data / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = sorted(root.glob("*/*.png"))
    random.Random(0).shuffle(files)
    files = files[: 64 * max(a.steps)]
    images = torch.from_numpy(np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (32, 32)) for f in files]))
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    nudged = images.clone()
    nudged[0, 16, 16] = min(int(nudged[0, 16, 16]) + 1, 255)
    kw = {"optimizer": a.optimizer, "lr0": 0.01, "momentum": 0.9}
    print(f"{a.optimizer}, batch 16, nbs 64, real images at 32 px, no augmentation")
    print("| steps | fast vs stock: median | p90 | largest | floor (one pixel +1) vs stock: median | p90 | largest |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in a.steps:
            n = 64 * k
            stock = first_epoch_update(ClassificationTrainer, a.data, Path(tmp), images[:n], labels[:n], **kw)
            fast = first_epoch_update(MemoryTrainer, a.data, Path(tmp), images[:n], labels[:n], **kw)
            floor = first_epoch_update(ClassificationTrainer, a.data, Path(tmp), nudged[:n], labels[:n], **kw)
            cells = []
            for d in (update_differences(fast, stock), update_differences(floor, stock)):
                cells += [f"{np.median(d):.2e}", f"{np.quantile(d, 0.9):.2e}", f"{d.max():.2e}"]
            print(f"| {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
