"""A corpus of damaged run directories, checkpoints, trees, recipes and argument values, each through the CLI.

Every case asserts: the exit code; exactly one `Error:` line, naming the file or the key at fault; no traceback;
and that the good files around it are byte for byte unchanged. Cases where a derived file is rebuilt instead (stored
predictions) assert the rebuild and the note that says so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fmnist_yolo import prepare
from tests.conftest import one_error, run_cli, synthetic_arrays, write_checkpoint, write_source

TRAIN = ["model=yolo11n-cls.yaml", "epochs=1", "batch=16", "plots=False", "workers=0", "imgsz=28"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A synthetic tree and one finished run on it (made once; each case damages a copy)."""
    import fmnist_yolo

    root = tmp_path_factory.mktemp("good")
    write_source(root / "src", synthetic_arrays())
    tree = prepare(source=root / "src", out=root / "tree", val_size=20, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=1, batch=16, plots=False, workers=0, imgsz=28,
                            data=str(tree), project=str(root / "runs"), name="run")  # fmt: skip
    return tree, run.dir


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def run(good, tmp_path):
    """A private copy of the good run, inside a runs/ folder of its own."""
    tree, src = good
    dest = tmp_path / "runs" / "run"
    shutil.copytree(src, dest)
    record = json.loads((dest / "fmnist_yolo.json").read_text())
    record["data"]["tree"] = str(tree)
    (dest / "fmnist_yolo.json").write_text(json.dumps(record))
    return dest


@pytest.fixture
def tree(good, tmp_path):
    """A private copy of the good tree."""
    dest = tmp_path / "tree"
    shutil.copytree(good[0], dest)
    return dest


def fails(argv: list[str], capsys, names: str, *also: str) -> str:
    """Run the CLI: exit 1, one Error line that names `names` (and says `also`), no traceback."""
    code, _, err = run_cli(argv, capsys)
    line = one_error(err)
    assert code == 1, err[-2000:]
    assert names in line, line
    for text in also:
        assert text in line, line
    return line


def _set_cell(path: Path, column: str, value: str) -> None:
    header, row, *rest = path.read_text().splitlines()
    cells = row.split(",")
    cells[[c.strip() for c in header.split(",")].index(column)] = value
    path.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")


def unchanged(before: dict[str, str], root: Path) -> None:
    """Every file that was there is still there, byte for byte (Ultralytics may add its *.cache files)."""
    after = digests(root)
    kept = {k: v for k, v in before.items() if not k.endswith(".cache")}  # Ultralytics' label caches are its own
    assert {k: after.get(k) for k in kept} == kept


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- run directories ---------------------------------------------------------------------------

RUN_FILE_CASES = {
    # name: (file, damage, commands)
    "provenance invalid JSON": ("fmnist_yolo.json", lambda p: p.write_text('{"status": "fini'), ["report", "compare"]),
    "provenance a list": ("fmnist_yolo.json", lambda p: p.write_text("[1, 2]"), ["report", "compare"]),
    "provenance wrong type": ("fmnist_yolo.json", lambda p: p.write_text('{"args": "x"}'), ["report", "compare"]),
    "provenance unknown status": ("fmnist_yolo.json", lambda p: p.write_text('{"status": "great"}'), ["report"]),
    "provenance binary": ("fmnist_yolo.json", lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), ["report"]),
    "results cut mid-row": ("results.csv", lambda p: cut(p, 0.8), ["report", "compare"]),
    "results empty": ("results.csv", lambda p: p.write_text(""), ["report", "compare"]),
    "results no accuracy column": ("results.csv", lambda p: p.write_text("epoch,time\n1,3.0\n"), ["report"]),
    "results not numeric": ("results.csv", lambda p: _set_cell(p, "metrics/accuracy_top1", "x"), ["report"]),
    "args.yaml invalid YAML": ("args.yaml", lambda p: p.write_text("model: [unclosed\n"), ["report", "compare"]),
    "args.yaml not a mapping": ("args.yaml", lambda p: p.write_text("- a\n- b\n"), ["compare"]),
}


@pytest.mark.parametrize("case", sorted(RUN_FILE_CASES))
def test_damaged_run_file(case, run, capsys):
    name, damage, commands = RUN_FILE_CASES[case]
    damage(run / name)
    before = digests(run.parent)
    for command in commands:
        argv = {"report": ["report", str(run)], "compare": ["compare", str(run.parent), "csv=False"]}[command]
        fails(argv, capsys, str(run / name))
        assert digests(run.parent) == before, f"{command} changed files of a damaged run"
    assert not (run / ".report.tmp").exists()


def test_compare_can_list_the_other_runs(run, good, capsys):
    shutil.copytree(good[1], run.parent / "other")
    (run / "fmnist_yolo.json").write_text("{broken")
    code, out, err = run_cli(["compare", str(run.parent), "skip_damaged=True", "csv=False"], capsys)
    assert code == 0 and "damaged" in out and "WARNING" in err and str(run / "fmnist_yolo.json") in err


@pytest.mark.parametrize("damage", ["garbage", "cut mid-row", "missing"])
def test_stored_predictions_are_rebuilt_not_trusted(damage, run, capsys):
    preds = run / "test_predictions.csv"
    if damage == "garbage":
        preds.write_bytes(b"\x00\x01 not a table")
    elif damage == "cut mid-row":
        cut(preds, 0.5)
    else:
        preds.unlink()
    best = digests(run / "weights")
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert ("is damaged" if damage != "missing" else "is missing") in err and "stored the predictions" in err
    assert len(preds.read_text().splitlines()) == 31 and digests(run / "weights") == best


def test_failed_report_changes_nothing(run, capsys, monkeypatch):
    code, _, _ = run_cli(["report", str(run)], capsys)
    assert code == 0
    before = digests(run)
    import fmnist_yolo.analysis.plots as plots

    monkeypatch.setattr(plots, "reliability_diagram", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    code, _, err = run_cli(["report", str(run)], capsys)
    assert code != 0 or "Error" in err
    assert digests(run) == before and not (run / ".report.tmp").exists()


def test_report_of_a_resumed_plain_run(good, tmp_path, capsys):
    """A plain Ultralytics run, interrupted, resumed by fmnist-yolo, then reported: provenance made once, complete."""
    from ultralytics import YOLO

    tree = good[0]
    import fmnist_yolo

    model = YOLO("yolo11n-cls.yaml")
    model.add_callback("on_model_save", lambda t: (_ for _ in ()).throw(KeyboardInterrupt))  # after epoch 1's save
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(tree), epochs=2, imgsz=28, batch=16, plots=False, workers=0, device="cpu",
                    project=str(tmp_path / "runs"), name="plain")  # fmt: skip
    plain = tmp_path / "runs" / "plain"
    assert (plain / "weights" / "last.pt").is_file() and not (plain / "fmnist_yolo.json").exists()
    code, _, err = run_cli(["train", f"resume={plain}"], capsys)
    assert code == 0, err[-2000:]
    record = json.loads((plain / "fmnist_yolo.json").read_text())
    assert record["data"]["manifest_sha256"] and record["status"] == "finished"
    assert fmnist_yolo.report(plain).is_file()


# --- checkpoints -------------------------------------------------------------------------------


def _bad_checkpoint(kind: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        shutil.copyfile(write_checkpoint(path.with_name("ok.pt")), path)
        cut(path, 0.5)
    elif kind == "text file":
        path.write_text("not a checkpoint at all\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip without a model":
        import torch

        torch.save({"weights": [1, 2, 3]}, path)
    elif kind == "detection model":
        write_checkpoint(path, nc=10, task="detect")
    elif kind == "5 classes":
        write_checkpoint(path, nc=5)
    return path


CHECKPOINTS = {
    "truncated": "damaged checkpoint", "text file": "not a PyTorch checkpoint", "empty": "not a PyTorch checkpoint",
    "zip without a model": "not an Ultralytics checkpoint", "detection model": "not a classification model",
    "5 classes": "a model of 5 classes",
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_damaged_or_foreign_checkpoint(kind, tree, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pt = _bad_checkpoint(kind, tmp_path / "weights" / "x.pt")
    image = next((tree / "test").rglob("*.png"))
    fails(["val", f"model={pt}", f"data={tree}"], capsys, str(pt), CHECKPOINTS[kind])
    fails(["predict", f"model={pt}", f"source={image}"], capsys, str(pt), CHECKPOINTS[kind])
    if kind != "5 classes":  # pretrained weights of other classes are fine to train from: Ultralytics swaps the head
        fails(["train", f"model={pt}", f"data={tree}", "epochs=1"], capsys, str(pt), CHECKPOINTS[kind])


def test_truncated_best_pt_of_a_run(run, capsys):
    cut(run / "weights" / "best.pt")
    (run / "test_predictions.csv").unlink()  # so that evaluating is needed
    others = {k: v for k, v in digests(run).items() if k != "weights/best.pt"}
    for argv in (["val", f"model={run}"], ["report", str(run)]):
        fails(argv, capsys, str(run / "weights" / "best.pt"), "damaged checkpoint")
    assert {k: v for k, v in digests(run).items() if k != "weights/best.pt"} == others


def test_resume_with_damaged_last_and_no_safe_copy(run, capsys):
    (run / "weights" / ".last.safe.pt").unlink(missing_ok=True)
    (run / "weights" / "last.pt").write_text("garbage")
    fails(["train", f"resume={run}"], capsys, str(run / "weights" / "last.pt"), "damaged checkpoint")


# --- images and sources given to predict -------------------------------------------------------


def test_predict_sources(run, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fails(["predict", f"model={run}", f"source={text}"], capsys, str(text), "is not an image file")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(["predict", f"model={run}", f"source={empty}"], capsys, str(empty), "holds no images")
    garbage = tmp_path / "bad.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    fails(["predict", f"model={run}", f"source={garbage}"], capsys, str(garbage))
    fails(["predict", f"model={run}", f"source={garbage}", "imgsize=32"], capsys, "imgsize", "did you mean 'imgsz'")
    fails(["val", f"model={run}", "epocs=3"], capsys, "epocs", "did you mean 'epochs'")


# --- trees -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True], ids=["stock", "fast"])
def test_undecodable_png_stops_training(fast, tree, tmp_path, capsys):
    victim = sorted((tree / "train" / "3_dress").glob("*.png"))[1]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # same name, not an image
    before = digests(tree)
    line = fails(["train", *TRAIN, f"data={tree}", f"fast={fast}", f"project={tmp_path / 'runs'}", "name=r"], capsys,
                 str(victim), "cannot decode image")  # fmt: skip
    assert "fmnist-yolo check" in line
    unchanged(before, tree)
    record = json.loads((tmp_path / "runs" / "r" / "fmnist_yolo.json").read_text())
    assert record["status"] == "failed" and "cannot decode image" in record["error"]
    code, out, _ = run_cli(["compare", str(tmp_path / "runs"), "csv=False"], capsys)
    assert code == 0 and "failed" in out


def test_missing_png_is_caught_before_training(tree, tmp_path, capsys):
    victim = sorted((tree / "train" / "5_sandal").glob("*.png"))[0]
    victim.unlink()
    fails(["train", *TRAIN, f"data={tree}", f"project={tmp_path / 'runs'}"], capsys, str(tree / "train" / "5_sandal"),
          "the manifest says")  # fmt: skip
    assert not (tmp_path / "runs").exists()  # nothing started, nothing half-made


def test_damaged_manifest(tree, capsys):
    (tree / "manifest.json").write_text("{nope")
    fails(["check", str(tree)], capsys, str(tree), "no readable manifest.json")


def test_val_split_missing(run, tree, capsys):
    shutil.rmtree(tree / "val")
    fails(["val", f"model={run}", f"data={tree}", "split=val"], capsys, str(tree), "no val/ split")


# --- recipes, cfg= files and argument values ---------------------------------------------------


@pytest.mark.parametrize("content, says", [
    ("epochs: [unclosed\n", "is not valid YAML"),
    ("- epochs\n- 3\n", "expected a mapping of arguments"),
    ("epochz: 3\n", "did you mean 'epochs'"),
    ("", None),  # an empty file is an empty mapping: allowed
])  # fmt: skip
@pytest.mark.parametrize("key", ["cfg", "recipe"])
def test_bad_recipe_or_cfg_file(key, content, says, tmp_path, capsys, monkeypatch):
    from fmnist_yolo.training.args import resolve_args

    f = tmp_path / "mine.yaml"
    f.write_text(content)
    if says is None:
        assert resolve_args({key: str(f)})["epochs"] == 100
        return
    fails(["train", f"{key}={f}", "epochs=1"], capsys, str(f), says)


VALUES = [
    ("imgsz=-32", "imgsz", "from 1 to 8192"), ("imgsz=abc", "imgsz", ""), ("imgsz=[32,64]", "imgsz", "one integer"),
    ("epochs=0", "epochs", ">= 1"), ("epochs=1.5", "epochs", ""), ("batch=0", "batch", "AutoBatch"),
    ("batch=-5", "batch", "AutoBatch"), ("fraction=0", "fraction", "(0, 1]"), ("fraction=1.5", "fraction", ""),
    ("lr0=0", "lr0", "> 0"), ("lr0=-1", "lr0", ""), ("nbs=0", "nbs", ">= 1"), ("workers=-1", "workers", ">= 0"),
    ("scale=1.0", "scale", "[0, 1)"), ("select_on=top5", "select_on", "top1_top5, top1"),
]  # fmt: skip


@pytest.mark.parametrize("word, key, says", VALUES, ids=[v[0] for v in VALUES])
def test_argument_values_are_checked(word, key, says, tree, tmp_path, capsys):
    line = fails(["train", word, f"data={tree}", f"project={tmp_path / 'runs'}"], capsys, key, says)
    assert "Error: " in line
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("words, says", [
    (["fast=True", "device=0,1"], "fast=True: the fast path trains on one device"),
    (["fast=True", "time=1"], "give epochs=, not time="),
])  # fmt: skip
def test_combinations_that_cannot_work(words, says, tree, capsys):
    fails(["train", *words, f"data={tree}"], capsys, words[1].split("=")[0], says)


def test_good_files_of_a_run_survive_a_failing_val(run, capsys):
    before = digests(run)
    fails(["val", f"model={run}", "split=nope"], capsys, "split", "one of test, val, train")
    fails(["val", f"model={run}", "batch=abc"], capsys, "batch")
    assert digests(run) == before


def test_images_are_pixel_data_not_just_files(tree):
    """(the corpus's premise) a garbage PNG is still a file: only decoding tells, and that is what the run checks."""
    victim = next((tree / "test").rglob("*.png"))
    assert cv2.imread(str(victim), cv2.IMREAD_GRAYSCALE) is not None
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(np.zeros(40, np.uint8)))
    assert cv2.imread(str(victim), cv2.IMREAD_GRAYSCALE) is None
