"""Where the model comes from: files, local names, Ultralytics' weights_dir, the offline fallback, trust."""

from pathlib import Path

import pytest

from fmnist_yolo.errors import FmnistError, FmnistWarning
from fmnist_yolo.training.weights import starting_weights
from tests.conftest import write_checkpoint


def test_offline_fallback_and_strict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(FmnistWarning) as said:
        w = starting_weights("yolo11n-cls.pt")
    assert (w.model, w.pretrained) == ("yolo11n-cls.yaml", False)
    assert len(said) == 1 and "tried" in str(said[0].message) and "weights/" in str(said[0].message)
    assert any("download" in t for t in w.tried) and str(tmp_path / "weights" / "yolo11n-cls.pt") in w.tried
    with pytest.raises(FmnistError, match="pretrained weights not available"):
        starting_weights("yolo11n-cls.pt", strict=True)


def test_weights_found_in_project_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "weights" / "yolo11n-cls.pt")
    w = starting_weights("yolo11n-cls.pt", strict=True)
    assert w.pretrained and Path(w.model).resolve() == (tmp_path / "weights" / "yolo11n-cls.pt").resolve()


def test_weights_found_in_ultralytics_weights_dir(tmp_path, monkeypatch):
    from ultralytics.utils import SETTINGS

    monkeypatch.chdir(tmp_path)  # no ./weights here
    theirs = tmp_path / "ultralytics-weights"
    write_checkpoint(theirs / "yolo11n-cls.pt")
    monkeypatch.setitem(SETTINGS, "weights_dir", str(theirs))  # the tests' private settings (conftest)
    w = starting_weights("yolo11n-cls.pt", strict=True)
    assert w.pretrained and Path(w.model) == theirs / "yolo11n-cls.pt" and str(theirs) in w.source


def test_yaml_is_not_pretrained():
    w = starting_weights("yolo11n-cls.yaml", strict=True)
    assert (w.model, w.pretrained) == ("yolo11n-cls.yaml", False)


def test_untrusted_weights_warn_once(tmp_path, monkeypatch):
    import warnings

    from fmnist_yolo.evaluation.evaluate import trained_model_file

    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "downloads" / "someone.pt"
    inside = tmp_path / "runs" / "classify" / "train" / "weights" / "best.pt"
    for p in (outside, inside, tmp_path / "weights" / "mine.pt"):
        write_checkpoint(p)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trained_model_file(inside)
        trained_model_file(inside.parents[1])
        starting_weights("weights/mine.pt")
        assert not [w for w in said if issubclass(w.category, FmnistWarning)]  # the project's runs/, weights/
        trained_model_file(outside)
        starting_weights(str(outside))
    ours = [str(w.message) for w in said if issubclass(w.category, FmnistWarning)]
    assert len(ours) == 1 and str(outside) in ours[0] and "can run code when loaded" in ours[0]
