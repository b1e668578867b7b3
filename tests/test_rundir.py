"""The run directory contract: the provenance record's one writer and reader, older schemas, damage."""

import json

import pandas as pd
import pytest

from fmnist_yolo.errors import RunError
from fmnist_yolo.rundir import (
    SCHEMA,
    Provenance,
    best_epoch,
    load_history,
    paths,
    predictions_current,
    read_provenance,
    write_provenance,
)


def test_record_round_trip_keeps_unknown_keys(tmp_path):
    record = Provenance(status="finished", args={"epochs": 3}, metrics={"test": {"top1": 0.9}})
    record.extra["from_a_newer_version"] = {"x": 1}
    write_provenance(tmp_path, record)
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
    h = pd.DataFrame({"val_top1": [0.5, 0.7, 0.7], "val_top5": [0.99, 0.95, 0.96]}, index=[1, 2, 3])
    assert best_epoch(h, "top1") == 3 and best_epoch(h) == 3
    assert best_epoch(h.iloc[:2]) == 2


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
