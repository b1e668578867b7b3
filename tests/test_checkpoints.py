"""Reading .pt checkpoints: one error naming the file for anything that is not a classification checkpoint."""

import pytest
import torch

from fmnist_yolo.checkpoints import check_classifier, load_checkpoint, trusted_dirs
from fmnist_yolo.errors import RunError
from tests.conftest import write_checkpoint


def test_a_real_checkpoint_loads(tmp_path):
    ckpt = load_checkpoint(write_checkpoint(tmp_path / "ok.pt"))
    check_classifier(tmp_path / "ok.pt", ckpt, classes=10)


@pytest.mark.parametrize("content, says", [
    (b"", "not a PyTorch checkpoint"), (b"hello, world", "not a PyTorch checkpoint"),
    (b"PK\x03\x04 then nothing", "damaged checkpoint"),
])  # fmt: skip
def test_not_a_checkpoint(content, says, tmp_path):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(RunError, match=f"{tmp_path / 'x.pt'}: {says}"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_pytorch_file_without_a_model(tmp_path):
    torch.save({"state": [1, 2]}, tmp_path / "x.pt")
    with pytest.raises(RunError, match="not an Ultralytics checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_other_task_or_class_count(tmp_path):
    det = write_checkpoint(tmp_path / "det.pt", task="detect")
    with pytest.raises(RunError, match="a detect model, not a classification model"):
        check_classifier(det, load_checkpoint(det))
    five = write_checkpoint(tmp_path / "five.pt", nc=5)
    check_classifier(five, load_checkpoint(five))  # any class count, unless one is asked for
    with pytest.raises(RunError, match="a model of 5 classes; Fashion-MNIST has 10"):
        check_classifier(five, load_checkpoint(five), classes=10)


def test_missing_file(tmp_path):
    with pytest.raises(RunError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_trusted_dirs_include_the_project_and_ultralytics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = trusted_dirs()
    assert tmp_path / "runs" in dirs and tmp_path / "weights" in dirs and len(dirs) == 4
