"""MLflow tracking against a real local tracking server: what a run logs, compare(source="mlflow"), failures.

The test names contain "test_mlflow": Ultralytics' own MLflow callback stays quiet in any other pytest test.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import fmnist_yolo
from fmnist_yolo import prepare
from tests.conftest import SYNTHETIC_RUN, require, synthetic_arrays, write_source


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 and a free port, SQLite store and artifacts in a temporary directory."""
    require("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
           "--artifacts-destination", str(root / "art")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    write_source(root / "src", synthetic_arrays())
    return prepare(source=root / "src", out=root / "tree", val_size=20, verify=False, workers=1, progress=False)


def test_mlflow_default_store_keeps_everything_under_runs(tmp_path, monkeypatch):
    """Without MLFLOW_TRACKING_URI: the store is runs/mlflow.db and artifacts go to runs/mlartifacts/, not ./mlruns."""
    require("mlflow")
    import mlflow

    from fmnist_yolo import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset for fmnist-yolo; restored after (MLflow sets it)
    tracker = tracking.Tracker("default-store").start()
    assert tracker.ok
    try:
        (tmp_path / "note.txt").write_text("x")
        mlflow.log_artifact(str(tmp_path / "note.txt"))
    finally:
        mlflow.end_run()
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert list((tmp_path / "runs" / "mlartifacts").rglob("note.txt")) and not (tmp_path / "mlruns").exists()


def test_mlflow_run_logged_and_compared(server, tree, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "mlflow", True)  # Ultralytics' callback on, as it is by default for users
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fmnist-yolo-test")
    runs = tmp_path / "runs"
    run = fmnist_yolo.train(**SYNTHETIC_RUN, epochs=2, data=str(tree), project=str(runs), name="tracked", mlflow=True,
                            fast=False)  # fmt: skip
    run_id = run.provenance["tracking"]["mlflow"]["run_id"]
    client = MlflowClient(server)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    params, metrics, tags = logged.data.params, logged.data.metrics, logged.data.tags
    assert params["fmnist.recipe.name"] == "default" and params["fmnist.model.pretrained"] == "False"
    assert params["fmnist.imgsz.effective"] == "32" and params["fmnist.data.manifest_sha256"] == \
        run.provenance["data"]["manifest_sha256"]  # fmt: skip
    assert metrics["test_top1"] == pytest.approx(run.test.top1) and "macro_f1" in metrics and "ece" in metrics
    assert "metrics/accuracy_top1" in metrics  # Ultralytics' own callback logged the epochs into the same run
    assert tags["fmnist.recipe"] == "default" and tags["fmnist.fast"] == "False"
    artifacts = {a.path for a in client.list_artifacts(run_id, "test")}
    assert {"test/per_class.csv", "test/confusion.csv"} <= artifacts
    per_class = client.download_artifacts(run_id, "test/per_class.csv", str(tmp_path))
    assert "6_shirt" in open(per_class).read()

    second = fmnist_yolo.train(**SYNTHETIC_RUN, epochs=1, data=str(tree), project=str(runs), name="second",
                               mlflow=True, fast=True)  # fmt: skip
    assert second.provenance["tracking"]["mlflow"]["run_id"] != run_id
    on_disk = fmnist_yolo.compare(runs).drop(columns=["device"])
    tracked = fmnist_yolo.compare(runs, source="mlflow").drop(columns=["device"])
    assert sorted(tracked["name"]) == sorted(on_disk["name"]) == ["second", "tracked"]
    merged = on_disk.set_index("name").sort_index()
    from_mlflow = tracked.set_index("name").sort_index()
    for column in ("model", "pretrained", "epochs", "imgsz", "status", "best_epoch", "epochs_completed"):
        assert list(merged[column].astype(str)) == list(from_mlflow[column].astype(str)), column
    assert list(merged["loader"]) == list(from_mlflow["loader"]) == ["fast", "stock"]  # second, tracked
    for column in ("best_val_top1", "test_top1", "test_top5", "macro_f1", "ece", "train_time_s"):
        assert list(merged[column]) == pytest.approx(list(from_mlflow[column])), column

    report = fmnist_yolo.report(run.dir)
    assert report.is_file()
    assert {a.path for a in client.list_artifacts(run_id, "report")} >= {"report/report.md"}


RACE = """
import os, sys, time
from fmnist_yolo import tracking
import mlflow
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):  # then all at once: MLflow's schema creation on a new store raced itself
    time.sleep(0.001)
tracker = tracking.Tracker(sys.argv[2]).start()
if tracker.ok:
    mlflow.log_metric("test_top1", 0.5)
    mlflow.end_run()
print("tracked" if tracker.ok else "untracked", flush=True)
"""


def test_mlflow_runs_starting_at_once_on_a_new_store_are_all_tracked(tmp_path, monkeypatch):
    """Several runs start together on a SQLite store that does not exist yet: the store is made once, under a lock,
    and every run is tracked (unlocked, MLflow's table creation and migrations collide and runs go untracked)."""
    require("mlflow")
    from mlflow.tracking import MlflowClient

    from tests.conftest import ROOT

    store = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "race", "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(go), f"run{i}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4  # every one has imported mlflow
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert [out.strip() for out, _ in results] == ["tracked"] * 4, [err[-1500:] for _, err in results]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"run{i}" for i in range(4)]
    assert all(r.data.metrics["test_top1"] == 0.5 and r.info.status == "FINISHED" for r in runs)


def test_mlflow_server_down_warns_once_and_training_goes_on(tree, tmp_path, monkeypatch):
    require("mlflow")
    from fmnist_yolo import tracking
    from fmnist_yolo.errors import FmnistWarning

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setattr(tracking, "_WARNED", set())
    with pytest.warns(FmnistWarning, match="MLflow: starting the run failed") as said:
        run = fmnist_yolo.train(**SYNTHETIC_RUN, epochs=1, data=str(tree), project=str(tmp_path), name="down",
                                mlflow=True)  # fmt: skip
    assert sum("MLflow" in str(w.message) for w in said) == 1
    assert run.provenance["status"] == "finished" and run.provenance["tracking"] == {} and run.test is not None


def test_mlflow_off_switch(tree, tmp_path, monkeypatch):
    """mlflow=False: nothing is logged to MLflow, not even by Ultralytics' own callback with its setting on (the
    callback is active here: the test's name says test_mlflow). Checked in a real store, made beforehand."""
    require("mlflow")
    import mlflow
    from mlflow.tracking import MlflowClient
    from ultralytics.utils import SETTINGS

    from fmnist_yolo import tracking

    assert not tracking.enabled(False)
    monkeypatch.setitem(SETTINGS, "mlflow", True)  # Ultralytics' callback on, as it is by default for users
    store = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(store)
    assert [e.name for e in client.search_experiments()] == ["Default"]  # the store exists, empty
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)  # where anything in this process would log
    try:
        run = fmnist_yolo.train(**SYNTHETIC_RUN, epochs=1, data=str(tree), project=str(tmp_path), name="off",
                                mlflow=False, evaluate_test=False)  # fmt: skip
    finally:
        mlflow.end_run()
    assert run.provenance["tracking"] == {}
    experiments = client.search_experiments()
    assert [e.name for e in experiments] == ["Default"]
    assert client.search_runs([e.experiment_id for e in experiments]) == []
    from ultralytics.utils.callbacks import mlflow as stock

    assert stock.callbacks and "FMNIST_YOLO_MLFLOW_OFF" not in os.environ  # put back after the run


def test_mlflow_tune_trials_nest_under_the_search(server, tree, tmp_path, monkeypatch):
    require("ray.tune")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fmnist-yolo-tune")
    table = fmnist_yolo.tune(iterations=2, epochs=1, mlflow=True, project=str(tmp_path), name="search",
                             **{k: v for k, v in SYNTHETIC_RUN.items() if k != "device"}, data=str(tree))  # fmt: skip
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("fmnist-yolo-tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name == "search"]
    assert len(parents) == 1 and parents[0].data.metrics["best_val_top1"] == pytest.approx(table["best_val_top1"].max())
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
