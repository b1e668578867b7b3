"""The run directory contract: the provenance record's one writer (Recorder) and reader, older schemas, damage."""

import json

import pandas as pd
import pytest

from fmnist_yolo.errors import RunError
from fmnist_yolo.rundir import (
    SCHEMA,
    Provenance,
    Recorder,
    best_epoch,
    is_run,
    load_history,
    paths,
    predictions_current,
    read_args,
    read_provenance,
    recorded_row,
    trained_imgsz,
    training_seconds,
)


def test_record_round_trip_keeps_unknown_keys(tmp_path):
    record = Provenance(status="finished", args={"epochs": 3}, metrics={"test": {"top1": 0.9}})
    record.extra["from_a_newer_version"] = {"x": 1}
    Recorder(record, tmp_path).add()
    back = read_provenance(tmp_path)
    assert back == record and back.schema == SCHEMA and back.test == {"top1": 0.9}
    assert json.loads((tmp_path / "fmnist_yolo.json").read_text())["from_a_newer_version"] == {"x": 1}
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left beside it


def test_schema_1_is_read_with_defaults(tmp_path):
    """fmnist-yolo 0.1 wrote no schema, no select_on, and (resuming a plain run) no manifest checksum."""
    old = {"fmnist_yolo_version": "0.1.0", "status": "running", "args": {"epochs": 100, "fast": True},
           "data": {"tree": "/x", "has_val": True, "model_selection_split": "val"}}  # fmt: skip
    (tmp_path / "fmnist_yolo.json").write_text(json.dumps(old))
    record = read_provenance(tmp_path)
    assert record.schema == 1 and record.select_on == "top1_top5" and record.resumed == []
    assert record.data.get("manifest_sha256") is None and record.metrics == {} and record.test is None


@pytest.mark.parametrize("text, says", [
    ("{not json", "not valid JSON"), ("[1]", "a JSON object expected"), ('{"model": []}', "'model' has the wrong type"),
    ('{"status": "great"}', "unknown status"),
])  # fmt: skip
def test_damaged_record_is_one_error_naming_the_file(text, says, tmp_path):
    (tmp_path / "fmnist_yolo.json").write_text(text)
    with pytest.raises(RunError, match=says) as e:
        read_provenance(tmp_path)
    assert str(tmp_path / "fmnist_yolo.json") in str(e.value)


def test_no_record_is_a_plain_ultralytics_run(tmp_path):
    assert read_provenance(tmp_path) is None


def test_history_refuses_a_cut_row(tmp_path):
    header = "epoch,time,train/loss,metrics/accuracy_top1,metrics/accuracy_top5,val/loss,lr/pg0"
    (tmp_path / "results.csv").write_text(f"{header}\n1,2.0,1.5,0.5,0.9,1.2,0.01\n2,4.0,1.2,0.6")
    with pytest.raises(RunError, match="results.csv: training history is damaged at line 3"):
        load_history(tmp_path)
    (tmp_path / "results.csv").write_text(f"{header}\n1,2.0,1.5,0.5,0.9,1.2,0.01\n1,2.5,1.4,0.55,0.9,1.1,0.01\n")
    h = load_history(tmp_path)  # a resumed epoch written twice: the rerun counts
    assert list(h.index) == [1] and h.loc[1, "val_top1"] == 0.55


def test_best_epoch_rules():
    # epoch 2 has the best top-1, epoch 3 the best mean of top-1 and top-5 (0.84 against 0.825): the rules disagree
    h = pd.DataFrame({"val_top1": [0.5, 0.70, 0.69], "val_top5": [0.99, 0.95, 0.99]}, index=[1, 2, 3])
    assert best_epoch(h, "top1") == 2 and best_epoch(h, "top1_top5") == 3 and best_epoch(h) == 3
    # a tie: the later epoch (Ultralytics rewrites best.pt on an equal fitness), by either rule
    tie = pd.DataFrame({"val_top1": [0.7, 0.7, 0.6], "val_top5": [0.9, 0.9, 0.95]}, index=[1, 2, 3])
    assert best_epoch(tie, "top1") == 2 and best_epoch(tie) == 2
    assert best_epoch(pd.DataFrame({"val_top1": [float("nan")] * 2, "val_top5": [1.0] * 2}, index=[1, 2])) is None


def test_predictions_are_current_only_when_not_older_than_best(tmp_path):
    import os

    run = paths(tmp_path)
    assert not predictions_current(tmp_path)
    run.best.parent.mkdir()
    run.best.write_bytes(b"x")
    run.test_predictions.write_text("a\n")
    assert predictions_current(tmp_path)
    os.utime(run.test_predictions, (run.best.stat().st_mtime - 5,) * 2)
    assert not predictions_current(tmp_path)


def test_reproduction_record_read_and_damage_named(tmp_path):
    from fmnist_yolo.rundir import read_reproduction

    assert read_reproduction(tmp_path) is None  # not a reproduction
    (tmp_path / "reproduction.json").write_text('{"reproduces": "/runs/a", "verdict": "identical", "epochs": 2}')
    assert read_reproduction(tmp_path)["verdict"] == "identical"
    for text, says in (("{cut", "not valid JSON"), ('{"verdict": "identical"}', "damaged reproduction record")):
        (tmp_path / "reproduction.json").write_text(text)
        with pytest.raises(RunError, match=says) as e:
            read_reproduction(tmp_path)
        assert str(tmp_path / "reproduction.json") in str(e.value)


def test_predictions_written_in_the_same_instant_as_best_are_current(tmp_path):
    import os

    run = paths(tmp_path)
    run.best.parent.mkdir()
    run.best.write_bytes(b"x")
    run.test_predictions.write_text("a\n")
    os.utime(run.test_predictions, (run.best.stat().st_mtime,) * 2)
    assert predictions_current(tmp_path)


def test_record_details(tmp_path):
    """A record without a status is running; a key named like a field of the class (extra) is kept as a newer key;
    values JSON does not know (paths) are written as text, and the file is indented for a person to read."""
    from pathlib import Path

    (tmp_path / "fmnist_yolo.json").write_text('{"schema": 2, "extra": {"k": 1}}')
    record = read_provenance(tmp_path)
    assert record.status == "running" and record.extra == {"extra": {"k": 1}}
    Recorder(Provenance(args={"data": Path("/x/tree")}), tmp_path).add()
    text = (tmp_path / "fmnist_yolo.json").read_text()
    assert '"data": "/x/tree"' in text and text.count("\n") > 20 and text.endswith("}\n")
    with pytest.raises(RunError, match="expected one of running, finished, stopped, failed"):
        Provenance.from_dict({"status": "great"})
    with pytest.raises(RunError, match="found list"):
        Provenance.from_dict([1])
    (tmp_path / "fmnist_yolo.json").write_text("{")
    with pytest.raises(RunError, match="provenance record is not valid JSON"):
        read_provenance(tmp_path)


HEADER = "epoch,time,train/loss,metrics/accuracy_top1,metrics/accuracy_top5,val/loss,lr/pg0"


def test_history_columns_and_its_file(tmp_path):
    (tmp_path / "results.csv").write_text(f"{HEADER}\n1,2.0,1.5,0.5,0.9,1.2,0.01\n2,4.0,1.2,0.6,0.95,1.1,0.01\n")
    h = load_history(tmp_path / "results.csv")  # the file itself, or its run directory
    assert h.equals(load_history(tmp_path))
    assert list(h.columns) == ["epoch", "time", "train_loss", "val_top1", "val_top5", "val_loss", "lr_pg0"]
    assert h["epoch"].dtype.kind == "i" and h.index.tolist() == [1, 2] and h.loc[2, "val_top5"] == 0.95
    (tmp_path / "results.csv").write_text(f"{HEADER}\n1,2.0,1.5,0.5,x,1.2,0.01\n")
    with pytest.raises(RunError, match="results.csv: training history is damaged at line 2"):
        load_history(tmp_path)
    (tmp_path / "results.csv").write_text("epoch,time,metrics/accuracy_top1\n1,2.0,0.5\n")
    with pytest.raises(RunError, match="training history lacks the column.s. metrics/accuracy_top5"):
        load_history(tmp_path)


def test_training_seconds_across_a_resume():
    assert training_seconds(None) is None and training_seconds(pd.DataFrame({"time": []})) is None
    assert training_seconds(pd.DataFrame({"val_top1": [0.5]})) is None
    # 10 s, 10 s, then a resume restarts the clock: 4 s, 6 s
    assert training_seconds(pd.DataFrame({"time": [10.0, 20.0, 4.0, 10.0]})) == 30.0
    assert training_seconds(pd.DataFrame({"time": [7.5]})) == 7.5
    assert training_seconds(pd.DataFrame({"time": [10.0, 10.5, 10.5]})) == 10.5  # sub-second epochs count as such


@pytest.mark.parametrize("imgsz, trained", [(28, 32), (32, 32), (33, 64), (64, 64), (100.0, 128), (1, 32),
                                            (True, None), ("28", None), (None, None), ([28, 28], None)])  # fmt: skip
def test_trained_imgsz_is_rounded_up_to_the_stride(imgsz, trained):
    assert trained_imgsz(imgsz) == trained


def test_args_record(tmp_path):
    (tmp_path / "args.yaml").write_text("")
    assert read_args(tmp_path) == {} and not is_run(tmp_path)
    (tmp_path / "results.csv").write_text(HEADER + "\n")
    assert is_run(tmp_path) and not is_run(tmp_path / "args.yaml")
    (tmp_path / "args.yaml").write_text("- a list\n")
    with pytest.raises(RunError, match="args.yaml: Ultralytics' argument record is not a mapping"):
        read_args(tmp_path)
    (tmp_path / "args.yaml").write_text("epochs: [\n")
    with pytest.raises(RunError, match="args.yaml: Ultralytics' argument record is not valid YAML"):
        read_args(tmp_path)


def _plain_run(d, epochs=3, rows=3, **args):
    """A plain `yolo classify train` run directory: args.yaml and results.csv. Epoch 2 has the best top-1, epoch 3
    the best mean of top-1 and top-5."""
    import yaml

    d.mkdir(parents=True, exist_ok=True)
    (d / "args.yaml").write_text(yaml.safe_dump({"model": "yolo11n-cls.pt", "epochs": epochs, "imgsz": 28,
                                                 "device": "cpu", **args}))  # fmt: skip
    lines = ["1,10.0,1.5,0.50,0.99,1.2,0.01", "2,20.0,1.2,0.70,0.95,1.1,0.01", "3,31.0,1.1,0.69,0.99,1.0,0.01"]
    (d / "results.csv").write_text("\n".join([HEADER, *lines[:rows]]) + "\n")
    return d


def test_recorded_row_of_a_plain_ultralytics_run(tmp_path):
    row = recorded_row(_plain_run(tmp_path / "plain"))
    assert row == {"name": "plain", "model": "yolo11n-cls.pt", "pretrained": True, "epochs": 3, "epochs_completed": 3,
                   "imgsz": 32, "loader": "stock", "best_epoch": 3, "best_val_top1": 0.69, "train_time_s": 31.0,
                   "device": "cpu",
                   "status": "finished", "recorded_by": "ultralytics", "path": str(tmp_path / "plain")}  # fmt: skip
    short = recorded_row(_plain_run(tmp_path / "short", epochs=5, model="cfg/yolo11n-cls.yaml", imgsz=None))
    assert short["status"] == "incomplete" and short["pretrained"] is False and short["model"] == "yolo11n-cls.yaml"
    assert short["imgsz"] is None
    d = _plain_run(tmp_path / "noimgsz")
    (d / "args.yaml").write_text("epochs: 2\n")
    row = recorded_row(d)
    assert row["imgsz"] == 224 and row["model"] == "" and row["pretrained"] is False  # Ultralytics' default imgsz
    (d / "results.csv").unlink()
    row = recorded_row(d)
    assert (row["epochs_completed"], row["best_epoch"], row["best_val_top1"], row["train_time_s"], row["status"]) == (
        0, None, None, None, "incomplete")  # fmt: skip


def test_recorded_row_of_a_recorded_run_takes_the_record(tmp_path):
    d = _plain_run(tmp_path / "ours", epochs=5)
    record = Provenance(status="finished", args={"epochs": 3, "select_on": "top1", "fast": True},
                        imgsz={"effective": 64}, device="cuda:0",
                        model={"used": "/w/yolo11s-cls.pt", "pretrained": False, "parameters": 1234},
                        metrics={"test": {"top1": 0.9, "top5": 0.99, "macro_f1": 0.88, "ece": 0.01}})  # fmt: skip
    Recorder(record, d).add()
    row = recorded_row(d)
    assert row["best_epoch"] == 2 and row["best_val_top1"] == 0.70  # the record's select_on=top1
    assert {k: row[k] for k in ("model", "pretrained", "epochs", "imgsz", "loader", "device", "status",
                                "recorded_by")} == {
        "model": "yolo11s-cls.pt", "pretrained": False, "epochs": 3, "imgsz": 64, "loader": "fast", "device": "cuda:0",
        "status": "finished", "recorded_by": "fmnist-yolo"}  # fmt: skip
    assert (row["test_top1"], row["test_top5"], row["macro_f1"], row["ece"], row["parameters"]) == (
        0.9, 0.99, 0.88, 0.01, 1234)  # fmt: skip
    Recorder(Provenance(status="running", args={}), d).add()  # as a run is recorded when it starts
    row = recorded_row(d)
    assert row["model"] == "yolo11n-cls.pt" and row["pretrained"] is True and row["epochs"] == 5 and row["imgsz"] == 32
    assert row["status"] == "running" and row["test_top1"] is None and row["best_epoch"] == 3
    assert row["loader"] == "stock"  # a record without args.fast: trained before fast= existed, or by stock


def _on_disk(run_dir) -> dict:
    return json.loads((run_dir / "fmnist_yolo.json").read_text())


def test_recorder_records_a_training_run(tmp_path):
    """start writes the run as running, each epoch its progress, finish the final figures; the live record follows."""
    recorder = Recorder(Provenance(args={"epochs": 2}))
    assert recorder.start(tmp_path) == tmp_path / "fmnist_yolo.json"
    assert _on_disk(tmp_path)["status"] == "running" and _on_disk(tmp_path)["schema"] == SCHEMA
    recorder.epoch(wall_time_s=1.5, epochs_completed=1, eta={"after_epoch": 1, "remaining_s": 2})
    on_disk = _on_disk(tmp_path)
    assert (on_disk["status"], on_disk["epochs_completed"], on_disk["wall_time_s"]) == ("running", 1, 1.5)
    assert on_disk["eta"] == {"after_epoch": 1, "remaining_s": 2}
    recorder.finish(epochs_completed=2, wall_time_s=3.0, metrics={"val": {"top1": 0.5}, "test": None})
    back = read_provenance(tmp_path)
    assert back.status == "finished" and back.epochs_completed == 2 and back.metrics["val"] == {"top1": 0.5}
    assert back.eta == {"after_epoch": 1, "remaining_s": 2} and back.args == {"epochs": 2}  # kept from before
    assert recorder.record == back  # what the caller holds is what the file says
    assert not list(tmp_path.glob(".*tmp*"))


def test_recorder_fail_marks_only_a_run_without_its_first_epoch(tmp_path):
    """fail writes status and error where the run directory exists; a run with last.pt stays running (resumable)."""
    assert Recorder(Provenance()).fail("boom", tmp_path / "never-made") is None  # Ultralytics made no directory
    assert not (tmp_path / "never-made").exists()
    recorder = Recorder(Provenance())
    assert recorder.fail("training failed: bad data", tmp_path) == tmp_path / "fmnist_yolo.json"
    assert (_on_disk(tmp_path)["status"], _on_disk(tmp_path)["error"]) == ("failed", "training failed: bad data")
    resumable = tmp_path / "resumable"
    resumable.mkdir()
    Recorder(Provenance()).start(resumable)
    paths(resumable).last.parent.mkdir()
    paths(resumable).last.write_bytes(b"x")
    recorder = Recorder.open(resumable)
    assert recorder.fail("later failure") is None and _on_disk(resumable)["status"] == "running"
    assert recorder.record.error is None


def test_recorder_add_and_stop_for_later_stages(tmp_path):
    """add writes a later stage's part with the status unchanged; stop ends a running run early, saying by what."""
    assert Recorder.open(tmp_path) is None  # a plain Ultralytics run: nothing to add to
    Recorder(Provenance(status="finished", metrics={"test": {"top1": 0.9}}), tmp_path).add()
    recorder = Recorder.open(tmp_path)
    recorder.add(export={"onnx": {"file": "best.onnx"}})
    on_disk = _on_disk(tmp_path)
    assert on_disk["status"] == "finished" and on_disk["export"] == {"onnx": {"file": "best.onnx"}}
    assert on_disk["metrics"] == {"test": {"top1": 0.9}}
    recorder.stop("fmnist-yolo reproduce epochs=1", recipe={"name": "cpu"})  # a reproduction of the first epochs
    assert (_on_disk(tmp_path)["status"], _on_disk(tmp_path)["recipe"]) == ("stopped", {"name": "cpu"})
    trial = tmp_path / "trial"
    trial.mkdir()
    Recorder(Provenance()).start(trial)
    Recorder.open(trial).stop("ASHA early stopping (fmnist-yolo tune)")
    assert read_provenance(trial).stopped_by == "ASHA early stopping (fmnist-yolo tune)"
    with pytest.raises(TypeError, match="not fields the recorder writes: status"):
        Recorder.open(trial).add(status="finished")  # the status changes only through its methods


def test_recorder_write_that_fails_leaves_the_old_record(tmp_path, monkeypatch):
    """A full disk mid-write: the previous record stays whole on disk and in memory, and the error names the file;
    the next write goes through."""
    import errno
    from pathlib import Path

    recorder = Recorder(Provenance(args={"epochs": 2}))
    recorder.start(tmp_path)
    recorder.epoch(epochs_completed=1)
    before = (tmp_path / "fmnist_yolo.json").read_text()
    real_write = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError) as e:
        recorder.finish(epochs_completed=2, metrics={"val": {"top1": 0.5}})
    assert e.value.filename == str(tmp_path / "fmnist_yolo.json")
    assert (tmp_path / "fmnist_yolo.json").read_text() == before and [p.name for p in tmp_path.iterdir()] == [
        "fmnist_yolo.json"]  # fmt: skip
    assert recorder.record.status == "running" and recorder.record.epochs_completed == 1
    assert recorder.record.metrics == {}
    monkeypatch.setattr(Path, "write_text", real_write)
    recorder.finish(epochs_completed=2)
    assert _on_disk(tmp_path)["status"] == "finished"


@pytest.mark.parametrize("status, act, says", [
    ("finished", lambda r: r.epoch(epochs_completed=3), "a finished run records no epoch (only a running one does)"),
    ("finished", lambda r: r.finish(), "a finished run cannot become finished (it can become stopped)"),
    ("finished", lambda r: r.start(r.dir), "a finished run cannot become running (it can become stopped)"),
    ("failed", lambda r: r.stop("ASHA"), "a failed run cannot become stopped (it can become running)"),
    ("stopped", lambda r: r.finish(), "a stopped run cannot become finished (it can become running)"),
    ("stopped", lambda r: r.epoch(), "a stopped run records no epoch (only a running one does)"),
    ("running", lambda r: setattr(r.record, "status", "finished") or r.add(),
     "the record's status was set to finished directly (it changes only through start, fail, finish or stop)"),
    ("running", lambda r: setattr(r.record, "schema", 2) or r.epoch(), "the record's schema changed from 3 to 2"),
])  # fmt: skip
def test_recorder_refuses_an_illegal_transition_in_one_line_naming_the_file(status, act, says, tmp_path):
    Recorder(Provenance(status=status), tmp_path).add()
    before = (tmp_path / "fmnist_yolo.json").read_text()
    recorder = Recorder.open(tmp_path)
    with pytest.raises(RunError) as e:
        act(recorder)
    assert str(e.value) == f"{tmp_path / 'fmnist_yolo.json'}: {says}"
    assert (tmp_path / "fmnist_yolo.json").read_text() == before


def test_recorder_refuses_what_it_does_not_write(tmp_path):
    """No run directory yet, fields the record does not have, or status and schema passed as fields: one line each,
    nothing written; fail with no directory anywhere writes nothing."""
    with pytest.raises(RunError) as e:
        Recorder(Provenance()).add(metrics={})
    assert str(e.value) == "fmnist_yolo.json: no run directory to write the record in (start the run first)"
    recorder = Recorder(Provenance(), tmp_path)
    for fields, named in (({"nope": 1, "metrics": {}}, "nope"), ({"schema": 2}, "schema"), ({"status": "x"}, "status")):
        with pytest.raises(TypeError) as e:
            recorder.add(**fields)
        assert str(e.value) == f"{tmp_path / 'fmnist_yolo.json'}: not fields the recorder writes: {named}"
    assert not list(tmp_path.iterdir())
    assert Recorder(Provenance()).fail("boom") is None
