"""Training throughput, side by side in one run: the model alone, the fast path, the stock loader (CPU or GPU).

    python benchmarks/bench_throughput.py --device 0                 # GPU: every arm, default variants
    python benchmarks/bench_throughput.py --device cpu --arms model,fast,stock
    python benchmarks/bench_throughput.py --device 0 --arms model --variants bf16,bf16+compile --profile

Same model, recipe and device in every arm: the default recipe (yolo11n-cls.yaml, imgsz 28 -> 32, batch 16 with
nbs 64, so 64 images an optimizer step) at 100 epochs, so `optimizer=auto` picks what the real run gets (MuSGD).
Warm-up is off (warmup_epochs=0) in every arm, so each measures the steady state: 64 images a step (--nbs).

- model: forward, loss, backward and optimizer step (clipping, EMA) of the trainer the fast path builds, on one
  fixed batch of 64 already on the device: the ceiling for any loader at this batch and precision.
- fast: `fmnist_yolo.train(fast=True)`, timed inside Ultralytics' own loop (callbacks, logging) after warm batches.
- stock: `fmnist_yolo.train(fast=False)` (Ultralytics' loader with the workers it picks), timed the same way.

A variant is a set of precision/compile choices applied to an arm: fp32 (amp=False), fp16 (amp=True: Ultralytics'
default, GradScaler), bf16 (amp=bf16; on CPU too where it is native), +compile / +ro (torch.compile default /
reduce-overhead), +nchw (channels_last=False: the fast path otherwise trains channels_last, on CPU as on CUDA),
+stockmuon (model arm: Ultralytics' own MuSGD orthogonalisation instead of compat.muon_update_unpadded).
(BatchNorm per micro-batch against one per chunk: bench_fidelity.py, interleaved in one process.)
--nbs sets the images per optimizer step (the `cpu` recipe's 256: batch 16, 16 micro-batches accumulated).
Each arm runs in a fresh interpreter. Prints a table, then the ratios: fast / stock and fast / model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RECIPE = {"model": "yolo11n-cls.yaml", "imgsz": 28, "epochs": 100, "batch": 16, "warmup_epochs": 0, "seed": 0,
          "plots": False, "exist_ok": True}  # fmt: skip
IMAGES_PER_STEP = 64  # nbs: batch 16 x accumulate 4


def variant_args(variant: str) -> dict:
    """Ultralytics arguments for a variant name such as 'bf16+compile'."""
    precision, *extras = variant.split("+")
    args = {"amp": {"fp32": False, "fp16": True, "bf16": "bf16"}[precision], "compile": False}
    for extra in extras:
        args.update({"compile": {"compile": True}, "ro": {"compile": "reduce-overhead"},
                     "nchw": {"channels_last": False}, "stockmuon": {}}[extra])  # fmt: skip
    return args


MODEL_ONLY = r"""
import json, sys, time, torch
from fmnist_yolo import compat
from fmnist_yolo.training.fast import MemoryTrainer
import ultralytics.engine.trainer as engine
from ultralytics.utils.torch_utils import unwrap_model
import ultralytics.optim.muon as muon
from torch.profiler import record_function
kw, steps, warm, profile, out, stock_muon = json.loads(sys.argv[1])
stock_update = muon.muon_update
with compat.training():
    if stock_muon:  # Ultralytics' own bucketed, zero-padded orthogonalisation: the step before compat's
        muon.muon_update = stock_update
    t = MemoryTrainer(overrides=kw)
    keep = ("fmnist_yolo", "ultralytics.utils.callbacks.base")  # no integrations: MLflow would log this arm
    for event, fs in t.callbacks.items():
        t.callbacks[event] = [f for f in fs if f.__module__.startswith(keep)]
    t._setup_train()
    batch = next(iter(t.train_loader))
    batch = t.preprocess_batch(batch)
    t._chunk = None
    dtype = torch.bfloat16 if t.args.amp == "bf16" else t.amp
    def step():
        with record_function("forward+backward"):
            with engine.autocast(dtype, device=t.device.type):  # the trainer's own: bf16 on CPU too
                if t.args.compile:
                    preds = t.model(batch["img"])
                    loss, _ = unwrap_model(t.model).loss(batch, preds)
                else:
                    loss, _ = t.model(batch)
            t.scaler.scale(loss.sum()).backward()
        with record_function("optimizer_step (MuSGD, clip, EMA)"):
            t.optimizer_step()
    sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
    for _ in range(warm):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    opt = type(t.optimizer).__name__
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if t.device.type == "cuda" else [])
        with prof(activities=acts) as p:
            for _ in range(20):
                step()
            sync()
        key = "self_cuda_time_total" if t.device.type == "cuda" else "self_cpu_time_total"
        tables = [p.key_averages().table(sort_by=k, row_limit=40) for k in (key, "cpu_time_total")]
        open(out, "w").write("\n\nby CPU total\n".join(tables))
        ka = p.key_averages()
        gpu = sum(getattr(e, "self_device_time_total", 0) for e in ka) / 20 / 1e3
        launches = sum(e.count for e in ka if e.key.startswith("cudaLaunchKernel") or e.key == "cuLaunchKernel") / 20
        print("PROFILE", json.dumps({"gpu_ms_per_step": gpu, "launches_per_step": launches}))
print("RESULT", json.dumps({"img_s": steps * len(batch["cls"]) / dt, "ms_step": 1e3 * dt / steps,
      "batch": len(batch["cls"]), "optimizer": opt, "amp": bool(t.amp), "compile": t.args.compile}))
"""

LOOP = r"""
import json, sys, time, torch
import fmnist_yolo
kw, per_batch, warm, batches, per_step = json.loads(sys.argv[1])
mark = {}
def on_batch_end(trainer):
    mark["n"] = mark.get("n", 0) + 1
    if mark["n"] in (warm, warm + batches):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        mark[mark["n"]] = time.perf_counter()
    if mark["n"] == warm + batches:
        mark["optimizer"] = type(trainer.optimizer).__name__
        mark["workers"] = getattr(trainer.train_loader, "num_workers", None)
        mark["amp"] = bool(trainer.amp)
        trainer.stop = True
run = fmnist_yolo.train(callbacks={"on_train_batch_end": on_batch_end}, **kw)
dt = mark[warm + batches] - mark[warm]
print("RESULT", json.dumps({"img_s": batches * per_batch / dt, "ms_step": 1e3 * dt / batches * (per_step // per_batch),
      "batch": per_batch, "optimizer": mark["optimizer"], "workers": mark["workers"], "amp": mark["amp"],
      "compile": kw.get("compile", False)}))
"""


def run(code: str, payload: list) -> dict:
    """Run one arm in a fresh interpreter; its RESULT (and PROFILE) lines."""
    r = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1][:200] if r.stderr.strip() else f"exit {r.returncode}"}
    found = {}
    for line in r.stdout.splitlines():
        for tag in ("RESULT", "PROFILE"):
            if line.startswith(tag + " "):
                found.update(json.loads(line[len(tag) + 1 :]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="0", help="0 (first GPU) or cpu")
    parser.add_argument("--data", default="datasets/fashion-mnist")
    parser.add_argument("--arms", default="model,fast,stock")
    parser.add_argument("--variants", default=None, help="model and fast arms (stock: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--model-variants", default=None, help="model arm only (default: --variants)")
    parser.add_argument("--nbs", type=int, default=IMAGES_PER_STEP, help="images per optimizer step (default: 64)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"],
                        help="the run's planned epochs: 100 (default) gives MuSGD, 10 a short run's AdamW")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps per arm")
    parser.add_argument("--warm", type=int, default=30, help="untimed steps first")
    parser.add_argument("--profile", action="store_true", help="model arm: torch.profiler tables of 20 steps")
    parser.add_argument("--out", default=".", help="folder for profile tables and the JSON of the results")
    args = parser.parse_args()
    gpu = args.device != "cpu"
    variants = (args.variants or ("fp16,bf16,bf16+compile" if gpu else "fp32")).split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    common = {**RECIPE, "data": str(Path(args.data).absolute()), "device": args.device, "project": str(work),
              "nbs": args.nbs, "epochs": args.epochs}  # fmt: skip
    arm_variants = {"model": args.model_variants.split(",") if args.model_variants else variants, "fast": variants,
                    "stock": ["fp16" if gpu else "fp32"]}  # fmt: skip
    arms = args.arms.split(",")
    jobs = [("stock", v) for v in arm_variants["stock"] if "stock" in arms]  # then each variant's arms side by side
    jobs += [(a, v) for v in dict.fromkeys(arm_variants["model"] + variants) for a in ("model", "fast")
             if a in arms and v in arm_variants[a]]  # fmt: skip
    rows = []
    for arm, variant in jobs:
        kw = {**common, **variant_args(variant), "name": f"{arm}-{variant}"}
        t0 = time.perf_counter()
        if arm == "model":
            out = str(Path(args.out, f"profile-{variant.replace('+', '-')}.txt"))
            r = run(MODEL_ONLY, [kw, args.steps, args.warm, args.profile, out, "stockmuon" in variant])
        else:
            kw = {**kw, "fast": arm == "fast", "evaluate_test": False}
            per_batch = args.nbs if arm == "fast" else RECIPE["batch"]
            scale = args.nbs // per_batch
            r = run(LOOP, [kw, per_batch, args.warm * scale, args.steps * scale, args.nbs])
        rows.append({"arm": arm, "variant": variant, **r, "process_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "throughput.json").write_text(json.dumps(rows, indent=1))
    speed = {(r["arm"], r["variant"]): r.get("img_s") for r in rows}
    stock = next((v for (a, _), v in speed.items() if a == "stock" and v), None)
    goal = 5 if gpu else 4  # GPU issue: 5x stock; CPU issue: an epoch in <= 0.25x stock's time
    for (arm, variant), v in speed.items():
        if arm != "fast" or not v:
            continue
        model = speed.get(("model", variant))
        print(f"fast {variant}: {v:.0f} img/s" + (f"  fast/stock {v / stock:.2f}x (target >= {goal})" if stock else "")
              + (f"  fast/model {v / model:.2f} (target >= 0.80)" if model else ""))  # fmt: skip
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
