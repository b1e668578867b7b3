"""The cost of joining a Ray cluster: one search of 4 tiny trials on a 2-node cluster against the same search on a
private local Ray, side by side.

    python benchmarks/bench_cluster.py [--reps 2] [--trials 4] [--epochs 1]

Both arms run `fmnist-yolo tune iterations=4 cpu_per_trial=1 ...` as their own process, on the same tiny synthetic
tree, with 2 CPUs in all: the local arm starts its private Ray (the machine's 2 cores, in a temporary directory of
its own); the cluster arm joins, with address=auto, a head and a worker node of 1 CPU each started beforehand with
`ray start` (tests/raycluster.py), the worker's data root empty, so its first trial prepares the tree there. Arms
alternate, local first; each figure is the whole `fmnist-yolo tune` process, from start to exit. Starting the
cluster is not part of an arm (a cluster is started once and serves many searches) and is reported apart.
Target: cluster / local <= 1.2 (issue 32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import synthetic_arrays, write_source  # noqa: E402
from tests.raycluster import RayCluster  # noqa: E402

TRIAL = ["model=yolo11n-cls.yaml", "imgsz=28", "batch=16", "plots=False", "workers=0", "mlflow=False",
         "cpu_per_trial=1"]  # fmt: skip


def search(args: list[str], env: dict[str, str], cwd: Path, prefix: tuple[str, ...] = ()) -> float:
    """Seconds of one `fmnist-yolo tune` process (`prefix`: run within the cluster's network namespace)."""
    t0 = time.perf_counter()
    r = subprocess.run([*prefix, sys.executable, "-m", "fmnist_yolo", "tune", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed: {args}\n{r.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="alternating pairs (default: 2)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    opts = parser.parse_args()

    from fmnist_yolo import prepare
    from fmnist_yolo.training.tune import DATA_ENV

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    write_source(work / "src", synthetic_arrays())
    tree = prepare(source=work / "src", out=work / "head" / "tree", val_size=20, verify=False, workers=1,
                   progress=False)  # fmt: skip
    common = [f"iterations={opts.trials}", f"epochs={opts.epochs}", f"data={tree}", *TRIAL]
    yolo_env = {"YOLO_CONFIG_DIR": str(work / "yolo"), "YOLO_OFFLINE": "true", "PYTHONPATH": str(ROOT)}
    local_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    local_env.update(yolo_env, RAY_TMPDIR=tempfile.mkdtemp(prefix="rl-", dir="/tmp"), RAY_USAGE_STATS_ENABLED="0")
    times: dict[str, list[float]] = {"local": [], "cluster": []}
    with RayCluster(yolo_env) as cluster:
        t0 = time.perf_counter()
        cluster.start_head(1, {DATA_ENV: str(work / "head")})
        cluster.add_worker(1, {DATA_ENV: str(work / "worker"), "FMNIST_SOURCE": str(work / "src")})
        start_s = time.perf_counter() - t0
        for rep in range(opts.reps):
            for arm in ("local", "cluster"):
                args = [*common, f"project={work / 'runs'}", f"name={arm}{rep}"]
                if arm == "cluster":
                    seconds = search(["address=auto", *args], cluster.driver_env(), work, tuple(cluster.prefix))
                else:
                    seconds = search(args, local_env, work)
                times[arm].append(seconds)
                print(f"{arm} {rep}: {seconds:.1f} s", flush=True)
        left = cluster.stop()
    import ray
    import torch
    import ultralytics

    local, joined = statistics.median(times["local"]), statistics.median(times["cluster"])
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__,
        "ultralytics": ultralytics.__version__, "trials": opts.trials, "epochs": opts.epochs,
        "cluster_start_s": round(start_s, 1), "local_s": [round(t, 1) for t in times["local"]],
        "cluster_s": [round(t, 1) for t in times["cluster"]], "ratio_of_medians": round(joined / local, 3),
        "pair_ratios": [round(c / a, 3) for a, c in zip(times["local"], times["cluster"])],
        "cluster_left_clean": not left,
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
