"""The GPU proof in one command: bring-up, the CUDA tests, the Inductor stride repro, throughput side by side, then
the default recipe at 100 epochs with fast=True, evaluated once on test, all inside one time budget.

    bash benchmarks/gpu_proof.sh [--budget 540] [--resume DIR] [--skip tests,stride,throughput]   # on a GPU machine
    python benchmarks/gpu_proof.py --dry-run --data TREE --out DIR                              # on CPU (the suite)

Every figure lands in OUT/summary.json; the run's results.csv and fmnist_yolo.json beside it. The training phase
plans its own length: after each epoch it stops (at the next epoch's start, so every callback of the finished epoch
ran) when the next epoch would end past the budget less a reserve for test and copying; OUT/last.pt then holds the
run, and `--resume DIR` with those files (last.pt, results.csv, fmnist_yolo.json) carried back continues it in the
next call. The run lives at a fixed absolute path (RUN_ROOT), so that a checkpoint's recorded save_dir and data
path hold on every machine. At most 8 files come back from a device call: OUT holds at most 7.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = float(os.environ.get("PROOF_T0") or time.time())  # the shell's start: bring-up counts against the budget
RUN_ROOT = Path("/tmp/fmnist-gpu-proof")  # fixed on every machine: a resumed checkpoint finds its paths again
BUDGET_S = 540  # one device command is at most 600 s: 9 minutes leave a minute for the start and the transfers
RESERVE_S = 45  # after training: test evaluation of best.pt, copies, summary
PHASE_CAPS = {"tests": 90, "stride": 120, "throughput": 170}  # seconds each phase may take at most
RECIPE = {
    "epochs": 100,
    "imgsz": 28,
    "fast": True,  # the default recipe (model from recipes/default.yaml)
    "plots": False,
}  # Ultralytics plots with polars, which the offline machine lacks (benchmarks/gpu_carry.sh)

STRIDE_REPRO = r"""
import json, sys, torch
conv = torch.nn.Conv2d(64, 64, 3, padding=1).cuda().to(memory_format=torch.channels_last)
if sys.argv[1] == "nchw":  # fast.nchw_where_degenerate's remedy
    conv.weight.data = conv.weight.data.contiguous()
f = torch.compile(conv)
x = torch.randn(32, 64, 1, 1, device="cuda", requires_grad=True)
try:
    f(x).sum().backward(); torch.cuda.synchronize(); print("RESULT", json.dumps({"ok": True}))
except Exception as e:
    print("RESULT", json.dumps({"ok": False, "error": (str(e).splitlines() or [type(e).__name__])[0][:300]}))
"""


class Deadline(KeyboardInterrupt):
    """Raised at an epoch's start when the budget would not hold it: an interruption, so the run stays resumable."""


def left() -> float:
    """Seconds of the budget left."""
    return ARGS.budget - (time.time() - T0)


def subprocess_phase(name: str, cmd: list[str], cap: float) -> dict:
    """Run a phase in its own interpreter within min(cap, what is left): its RESULT lines, exit code and seconds."""
    t = time.time()
    limit = max(1.0, min(cap, left() - RESERVE_S - 60))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(out[-3000:])
        return {"phase": name, "timed_out_after_s": round(limit, 1)}
    print(r.stdout[-6000:], r.stderr[-3000:], sep="\n")
    found = [json.loads(line[7:]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    tail = (r.stdout.strip().splitlines() or [""])[-1]
    return {"phase": name, "rc": r.returncode, "seconds": round(time.time() - t, 1), "results": found, "tail": tail}


def environment() -> dict:
    """What the figures were measured on."""
    import torch
    import ultralytics

    import fmnist_yolo

    env = {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__,
           "fmnist_yolo": fmnist_yolo.__version__, "cuda": torch.cuda.is_available(), "platform": platform.platform(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
    if torch.cuda.is_available():
        env.update(device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())  # fmt: skip
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "--query-gpu=name,memory.total,driver_version"
            env["nvidia_smi"] = subprocess.run([smi, q, "--format=csv,noheader"], capture_output=True, text=True).stdout
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip() or None  # fmt: skip
    except OSError:
        env["commit"] = None
    return env


def restore(resume: Path) -> Path:
    """Lay a carried-back run (last.pt, results.csv, fmnist_yolo.json) at the save_dir its checkpoint records."""
    import torch

    ckpt = torch.load(resume / "last.pt", map_location="cpu", weights_only=False)
    run_dir = Path(ckpt["train_args"]["save_dir"])
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resume / "last.pt", run_dir / "weights" / "last.pt")
    for name in ("results.csv", "fmnist_yolo.json"):
        if (resume / name).is_file():
            shutil.copyfile(resume / name, run_dir / name)
    print(f"resuming {run_dir} after epoch {int(ckpt['epoch']) + 1}")
    return run_dir


def train(tree: Path, out: Path) -> dict:
    """The default recipe with fast=True, stopped between epochs when the budget would not hold the next one."""
    import fmnist_yolo

    pace: dict = {"epoch_s": [], "stop": False}

    def on_fit_epoch_end(trainer) -> None:
        if trainer.epoch >= trainer.epochs:  # Ultralytics' final evaluation of best.pt, logged as epoch N + 1
            return
        now = time.time()
        pace["epoch_s"].append(now - pace.get("mark", pace["t_start"]))
        pace["mark"] = now
        need = max(pace["epoch_s"][-2:]) * 1.15 + RESERVE_S  # the next epoch at the recent pace, then test
        pace["stop"] = left() < need

    def on_train_epoch_start(trainer) -> None:
        if pace["stop"]:
            raise Deadline(f"stopped before epoch {trainer.epoch + 1}: the budget would not hold it")

    callbacks = {"on_fit_epoch_end": on_fit_epoch_end, "on_train_epoch_start": on_train_epoch_start}
    common = {"data": str(tree), "device": ARGS.device}
    pace["t_start"] = time.time()
    finished, run_dir = False, None
    try:
        if ARGS.resume:
            run_dir = restore(Path(ARGS.resume))
            run = fmnist_yolo.train(resume=str(run_dir), callbacks=callbacks, **common)
        else:
            kw = {**RECIPE, **common, "project": str(Path(ARGS.run_root) / "runs"), "name": "default",
                  "exist_ok": True, **json.loads(ARGS.train_args)}  # fmt: skip
            run = fmnist_yolo.train(callbacks=callbacks, **kw)
        finished, run_dir = True, run.dir
    except Deadline as e:
        print(f"DEADLINE {e}")
    run_dir = run_dir or Path(ARGS.run_root) / "runs" / "default"
    for name in ("results.csv", "fmnist_yolo.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    if not finished and (run_dir / "weights" / "last.pt").is_file():
        shutil.copyfile(run_dir / "weights" / "last.pt", out / "last.pt")
    record = json.loads((run_dir / "fmnist_yolo.json").read_text()) if (run_dir / "fmnist_yolo.json").is_file() else {}
    epochs = pace["epoch_s"]
    return {"finished": finished, "run_dir": str(run_dir), "epochs_this_call": len(epochs),
            "epoch_s": [round(x, 2) for x in epochs], "train_call_s": round(time.time() - pace["t_start"], 1),
            "epochs_completed": record.get("epochs_completed"), "wall_time_s": record.get("wall_time_s"),
            "metrics": record.get("metrics"), "status": record.get("status")}  # fmt: skip


def main() -> None:
    out = Path(ARGS.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"budget_s": ARGS.budget, "dry_run": ARGS.dry_run, "env": environment()}
    import torch

    cuda = torch.cuda.is_available()
    tree = Path(ARGS.data).absolute() if ARGS.data else None
    if tree is None:  # the real tree at a fixed path (a resumed checkpoint names it)
        import fmnist_yolo

        tree = fmnist_yolo.prepare(out=str(Path(ARGS.run_root) / "datasets" / "fashion-mnist"), progress=False)
    skip = set(ARGS.skip.split(",")) if ARGS.skip else set()
    py = sys.executable
    if "tests" not in skip:  # the tests that need CUDA (skipped on a CPU): graph replays, MuSGD, RandAugment pixels
        summary["tests"] = subprocess_phase(
            "tests", [py, "-m", "pytest", "-q", "-k", "cuda and not device_step_trains", "tests/test_compat.py",
                      "tests/test_fast.py", "tests/test_randaugment.py"],
            PHASE_CAPS["tests"])  # fmt: skip
        # the captured step (fast/step.py) first meets a GPU here: where its test against stock's step fails, the
        # run below trains with the eager step (the same computation) rather than prove nothing
        captured = [py, "-m", "pytest", "-q", "-rA", "-k", "device_step_trains and cuda", "tests/test_fast.py"]
        check = summary["capture_test"] = subprocess_phase("capture", captured, PHASE_CAPS["tests"])
        if cuda and check.get("rc") != 0:
            from fmnist_yolo.training.fast.step import CAPTURE_ENV

            os.environ[CAPTURE_ENV] = "0"
            summary["capture_disabled"] = check.get("tail")
    if "stride" not in skip:
        summary["stride"] = (
            {arm: subprocess_phase(f"stride-{arm}", [py, "-c", STRIDE_REPRO, arm], PHASE_CAPS["stride"] / 2)
             for arm in ("channels_last", "nchw")} if cuda else {"skipped": "no CUDA"})  # fmt: skip
    if "throughput" not in skip:
        steps = ["--steps", "2", "--warm", "1"] if ARGS.dry_run else ["--steps", "200", "--warm", "30"]
        cmd = [py, "benchmarks/bench_throughput.py", "--device", ARGS.device, "--data", str(tree), "--out", str(out),
               "--variants", "fp32" if ARGS.dry_run else "bf16", *steps]  # fmt: skip
        summary["throughput"] = subprocess_phase("throughput", cmd, PHASE_CAPS["throughput"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))  # what is known so far survives a crash below
    summary["train"] = train(tree, out)
    summary["total_s"] = round(time.time() - T0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("SUMMARY", json.dumps({k: summary[k] for k in ("train", "total_s")}))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds from the shell's start to the summary")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-proof", help="where the figures go ($OUT)")
    p.add_argument("--resume", default=None, help="the folder of a previous call's last.pt, results.csv, ...")
    p.add_argument("--skip", default="", help="phases to leave out: tests,stride,throughput")
    p.add_argument("--data", default=None, help="a prepared tree (default: the real one, prepared under RUN_ROOT)")
    p.add_argument("--device", default=None, help="default: 0 on a GPU, cpu otherwise")
    p.add_argument("--run-root", default=str(RUN_ROOT), help="where the run and the real tree live (fixed paths)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny: the suite's check that this script runs")
    p.add_argument("--train-args", default="{}", help="JSON of extra train arguments (the dry run's small ones)")
    a = p.parse_args(argv)
    if a.device is None:
        import torch

        a.device = "0" if torch.cuda.is_available() and not a.dry_run else "cpu"
    if a.dry_run and a.train_args == "{}":
        a.train_args = json.dumps({"epochs": 2, "batch": 16, "nbs": 32, "plots": False})
    return a


if __name__ == "__main__":
    ARGS = parse()
    main()
