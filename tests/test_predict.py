"""predict(): which sources it takes, and one error for one that is not images."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from fmnist_yolo.errors import ConfigError
from fmnist_yolo.evaluation.predict import images_in, predict


def test_sources(tmp_path):
    img = tmp_path / "d" / "a.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    (tmp_path / "d" / "notes.txt").write_text("x")
    assert images_in(img) == [img] and images_in(tmp_path / "d") == [img]
    with pytest.raises(ConfigError, match="source not found"):
        images_in(tmp_path / "nope")
    with pytest.raises(ConfigError, match="is not an image file"):
        images_in(tmp_path / "d" / "notes.txt")
    (tmp_path / "e").mkdir()
    with pytest.raises(ConfigError, match="directory holds no images"):
        images_in(tmp_path / "e")


def test_predict_names_each_image(tiny):
    """Each image's class and confidence are the ones Ultralytics' validator gives it (evaluate's predictions)."""
    from fmnist_yolo import evaluate

    tree, run = tiny
    table = predict(run.dir, tree / "test" / "8_bag")
    assert len(table) == 3 and list(table.columns) == ["file", "class_id", "class", "confidence"]
    everything = predict(run.dir, tree / "test")
    expected = evaluate(run.dir, split="test", data=tree).predictions
    expected["file"] = expected["file"].map(lambda f: str(Path(f).absolute()))
    joined = everything.merge(expected, on="file", how="outer", validate="one_to_one", indicator=True)
    assert (joined["_merge"] == "both").all() and len(joined) == 30  # every test image, in both
    assert joined["class"].tolist() == joined["pred"].tolist() and (joined["class_id"] == joined["pred_id"]).all()
    np.testing.assert_allclose(joined["confidence_x"], joined["confidence_y"], atol=1e-4)
    assert joined["confidence_x"].nunique() > 1  # image by image, not one figure for all
    assert (
        table.set_index("file")["class"].to_dict() == everything.set_index("file").loc[table["file"], "class"].to_dict()
    )


def test_predict_searches_directories_recursively(tiny, tmp_path):
    """A directory of class folders (like a split of the tree): every image below it, each named once."""
    tree, run = tiny
    table = predict(run.dir, tree / "test")
    expected = sorted(str(f.absolute()) for f in (tree / "test").rglob("*.png"))
    assert sorted(table["file"]) == expected and len(expected) > 3
    (tmp_path / "sub").mkdir()
    bad = tmp_path / "sub" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = sorted((tree / "test" / "8_bag").glob("*.png"))[0]
    (tmp_path / good.name).write_bytes(good.read_bytes())
    with pytest.raises(ConfigError, match=r"bad.png: cannot decode image \(1 of 2 images\)"):
        predict(run.dir, tmp_path)
