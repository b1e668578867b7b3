"""predict(): which sources it takes, and one error for one that is not images."""

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
    tree, run = tiny
    table = predict(run.dir, tree / "test" / "8_bag")
    assert len(table) == 3 and list(table.columns) == ["file", "class_id", "class", "confidence"]
    assert table["confidence"].between(0, 1).all()
