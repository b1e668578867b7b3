"""`fmnist-yolo tune` on a running Ray cluster: a head and a worker node started as separate processes on this machine
(tests/raycluster.py), the search run as its own `fmnist-yolo tune address=auto` process, as a user would.

The nodes share this machine's disk, so each gets its own data root (FMNIST_YOLO_DATA): the head's holds the tree the
driver uses, the worker's starts empty, which makes "a node without the tree" real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fmnist_yolo
from fmnist_yolo import prepare
from fmnist_yolo.data.tree import content_checksum
from fmnist_yolo.training.tune import DATA_ENV
from tests.conftest import ROOT, require, synthetic_arrays, write_source
from tests.raycluster import RayCluster

TRIAL = ["model=yolo11n-cls.yaml", "imgsz=28", "batch=16", "plots=False", "workers=0", "mlflow=False"]
TIMEOUT = 240  # seconds for one search on the 2-core CI machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 1-CPU head whose data root holds the driver's tree and a 1-CPU worker whose data root is empty, with the
    same source directory ($FMNIST_SOURCE) a worker prepares its tree from. Stopped, and checked clean, at the end."""
    require("ray.tune")
    root = tmp_path_factory.mktemp("cluster")
    write_source(root / "src", synthetic_arrays())
    tree = prepare(source=root / "src", out=root / "head" / "tree", val_size=20, verify=False, workers=1,
                   progress=False)  # fmt: skip
    with RayCluster({"PYTHONPATH": str(ROOT)}) as c:  # the nodes run this checkout's fmnist_yolo
        c.root, c.tree, c.worker_tree = root, tree, root / "worker" / "tree"
        c.start_head(1, {DATA_ENV: str(root / "head")})
        c.worker_env = {DATA_ENV: str(root / "worker"), "FMNIST_SOURCE": str(root / "src")}
        c.add_worker(1, c.worker_env)
        yield c
        left = c.stop()
        assert not left, left  # no process of the cluster alive, no port of it bound


def worker(cluster: RayCluster):
    """The cluster's live worker node (a new one where a test killed it)."""
    if cluster.nodes[-1].killed:
        cluster.add_worker(1, cluster.worker_env)
    return cluster.nodes[-1]


def tune(cluster: RayCluster, cwd: Path, args: list[str]) -> subprocess.Popen:
    """`fmnist-yolo tune address=auto ARGS` as its own process (the search's driver), started."""
    argv = [sys.executable, "-m", "fmnist_yolo", "tune", "address=auto", f"data={cluster.tree}", *TRIAL, *args]
    env = cluster.driver_env(PYTHONPATH=str(ROOT))
    return subprocess.Popen([*cluster.prefix, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def provenance(run: str | Path) -> dict:
    return json.loads((Path(run) / "fmnist_yolo.json").read_text())


@pytest.mark.slow
def test_search_is_a_job_of_the_cluster_with_trials_on_both_nodes(cluster, tmp_path):
    """Two 1-CPU trials on two 1-CPU nodes (cpu_per_trial left to its default, the smallest node's CPUs): one runs on
    each, the worker's on a tree it prepared itself, equal to the driver's; the results come back to the driver."""
    worker(cluster)
    shutil.rmtree(cluster.worker_tree, ignore_errors=True)  # a node without the tree
    jobs = cluster.jobs()
    proc = tune(cluster, tmp_path, ["iterations=2", "epochs=1", f"project={tmp_path}", "name=t"])
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    after = cluster.jobs()
    new = [j for j in after if j["job_id"] not in {k["job_id"] for k in jobs}]
    assert len(new) == 1 and new[0]["driver_pid"] == proc.pid and " tune address=auto " in new[0]["entrypoint"]

    table = pd.read_csv(tmp_path / "t" / "tune_results.csv")
    assert len(table) == 2 and (table["status"] == "completed").all() and table["best_val_top1"].between(0, 1).all()
    assert (table["epochs_run"] == 1).all() and table["node"].notna().all()
    trees = {provenance(run)["data"]["tree"] for run in table["run"]}
    assert trees == {str(cluster.tree), str(cluster.worker_tree)}  # a trial on each node, each on its node's tree
    assert content_checksum(cluster.worker_tree) == content_checksum(cluster.tree)

    best = yaml.safe_load((tmp_path / "t" / "best_hyperparameters.yaml").read_text())
    assert best["lr0"] == pytest.approx(table["lr0"].iloc[0])
    run = fmnist_yolo.train(cfg=str(tmp_path / "t" / "best_hyperparameters.yaml"), data=str(cluster.tree), epochs=1,
                            plots=False, workers=0, evaluate_test=False, project=str(tmp_path),
                            name="from_best")  # fmt: skip
    assert run.provenance["args"]["lr0"] == pytest.approx(best["lr0"]) and run.weights.is_file()


@pytest.mark.slow
def test_a_node_whose_tree_differs_refuses_and_the_search_goes_on(cluster, tmp_path):
    """The worker's tree was prepared with another hold-out: its trial fails with one line naming the node and the
    checksums; the head's trial completes and is the best configuration."""
    worker(cluster)
    shutil.rmtree(cluster.worker_tree, ignore_errors=True)
    prepare(source=cluster.root / "src", out=cluster.worker_tree, val_size=30, verify=False, workers=1, progress=False)
    theirs, ours = content_checksum(cluster.worker_tree), content_checksum(cluster.tree)
    proc = tune(cluster, tmp_path, ["iterations=2", "epochs=1", f"project={tmp_path}", "name=t"])
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    table = pd.read_csv(tmp_path / "t" / "tune_results.csv", dtype={"trial": str}).set_index("status")
    assert sorted(table.index) == ["completed", "error"]
    line = table.loc["error", "error"]
    csv = tmp_path / "t" / "tune_results.csv"
    warning = f"WARNING: 1 of 2 trials failed ({csv}, status error); the first, trial {table.loc['error', 'trial']}: "
    assert warning + line in err  # the user sees why, not only that
    assert "\n" not in line and line.startswith("DataError: node ") and str(cluster.worker_tree) in line
    assert f"holds tree {theirs[:16]}, the search's is {ours[:16]}" in line
    assert provenance(table.loc["completed", "run"])["data"]["tree"] == str(cluster.tree)
    assert content_checksum(cluster.worker_tree) == theirs  # refused, not rebuilt
    assert yaml.safe_load((tmp_path / "t" / "best_hyperparameters.yaml").read_text())["lr0"] == pytest.approx(
        table.loc["completed", "lr0"]
    )


@pytest.mark.slow
def test_a_lost_node_fails_its_trial_and_the_search_goes_on(cluster, tmp_path):
    """The worker node's processes are killed while its trial trains: that trial is marked `error`, the head's trial
    runs to the end, and everything the driver wrote reads back whole."""
    node = worker(cluster)
    shutil.rmtree(cluster.worker_tree, ignore_errors=True)
    proc = tune(cluster, tmp_path, ["iterations=2", "epochs=4", f"project={tmp_path}", "name=t"])
    trials, lost = tmp_path / "t" / "trials", None
    deadline = time.monotonic() + TIMEOUT
    while lost is None:  # until a trial trains on the worker: its provenance names the worker's tree
        assert proc.poll() is None and time.monotonic() < deadline, finish(proc)[1][-3000:]
        for record in trials.glob("trial_*/fmnist_yolo.json"):
            try:
                if provenance(record.parent)["data"]["tree"] == str(cluster.worker_tree):
                    lost = record.parent
            except (OSError, ValueError, KeyError):
                pass  # not written yet
        time.sleep(0.1)
    cluster.kill(node)
    assert provenance(lost)["status"] == "running"  # killed mid-trial
    code, err = finish(proc)
    assert code == 0, err[-3000:]

    table = pd.read_csv(tmp_path / "t" / "tune_results.csv", dtype={"trial": str}).set_index("run")
    assert len(table) == 2
    dead = table.loc[str(lost)]
    assert dead["status"] == "error" and "\n" not in dead["error"] and dead["error"], dead
    kept = table.drop(index=str(lost)).iloc[0]
    assert kept["status"] == "completed" and kept["epochs_run"] == 4 and 0 <= kept["best_val_top1"] <= 1
    record = provenance(kept.name)  # the head's trial: whole, finished, every epoch in its history
    assert record["status"] == "finished" and record["epochs_completed"] == 4
    from fmnist_yolo.rundir import load_history

    assert load_history(kept.name)["epoch"].tolist() == [1, 2, 3, 4]
    best = yaml.safe_load((tmp_path / "t" / "best_hyperparameters.yaml").read_text())
    assert best["lr0"] == pytest.approx(kept["lr0"])
    from ray.tune import ExperimentAnalysis

    state = ExperimentAnalysis(str(tmp_path / "t" / "ray"))  # Ray's own experiment state, written on the head
    assert {t.trial_id: t.status for t in state.trials}[kept["trial"]] == "TERMINATED"
    assert state.trial_dataframes[kept["trial"]]["epoch"].tolist() == [1, 2, 3, 4]
