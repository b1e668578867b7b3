"""MuSGD's step on this machine: Ultralytics' muon_update against fmnist-yolo's unpadded one, side by side.

    python benchmarks/bench_musgd.py [--reps 30] [--device cpu]

The parameters and gradients of yolo11n-cls (nc=10): the orthogonalisation of one optimizer step, each function
timed over `reps` steps in alternating blocks, and the largest relative difference of their updates (bf16 rounding).
Target (issue 19): a cheaper step on CPU at the same result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from ultralytics.nn.tasks import ClassificationModel
from ultralytics.optim import muon

from fmnist_yolo.compat import muon_update_unpadded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False).to(args.device)
    params = [p for p in model.parameters() if p.ndim in (2, 4)]
    grads = [torch.randn_like(p) for p in params]
    arms = {"ultralytics": muon.muon_update, "unpadded": muon_update_unpadded}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for block in range(6):
        for name in arms if block % 2 == 0 else reversed(list(arms)):
            fn, buffers = arms[name], [torch.zeros_like(p) for p in params]
            fn(grads, buffers, beta=0.9)  # warm-up
            if args.device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.reps // 6 + 1):
                fn(grads, buffers, beta=0.9)
            if args.device != "cpu":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / (args.reps // 6 + 1) * 1000)
    a = arms["ultralytics"](grads, [torch.zeros_like(p) for p in params], beta=0.9)
    b = arms["unpadded"](grads, [torch.zeros_like(p) for p in params], beta=0.9)
    diff = max(float((x - y).norm() / y.norm()) for x, y in zip(b, a))
    ms = {k: statistics.median(v) for k, v in times.items()}
    print(f"device {args.device}, threads {torch.get_num_threads()}, {len(params)} matrices")
    print(
        f"ultralytics {ms['ultralytics']:.1f} ms/step, unpadded {ms['unpadded']:.1f} ms/step: "
        f"ratio {ms['unpadded'] / ms['ultralytics']:.3f}; largest relative update difference {diff:.3g}"
    )
    print(json.dumps({"ms": ms, "ratio": ms["unpadded"] / ms["ultralytics"], "max_rel_diff": diff}))


if __name__ == "__main__":
    main()
