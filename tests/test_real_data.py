"""End to end on the real Fashion-MNIST (Debian's package in CI): the tree, and the stock `yolo` CLI."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist_yolo import config, prepare
from fmnist_yolo.data import prepare as convert
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _independent_idx(path: str) -> np.ndarray:
    """Read an IDX file without fmnist_yolo: header length from the magic's dimension byte."""
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_real_tree_is_complete_and_pixel_exact(real_tree):
    info = json.loads((real_tree / "manifest.json").read_text())
    totals = {split: sum(c.values()) for split, c in info["counts"].items()}
    assert totals == {"train": 55000, "val": 5000, "test": 10000}
    assert set(info["counts"]["val"].values()) == {500}
    assert all(s["payload_sha256"] == config.SOURCE_FILES[k][2] for k, s in info["sources"].items())
    src = {k: _independent_idx(v["path"]) for k, v in info["sources"].items()}
    seen = {"train": set(), "test": set()}
    files = sorted(real_tree.glob("*/*/*.png"))
    assert len(files) == 70000
    for png in files:
        split, class_dir = png.parts[-3], png.parts[-2]
        source_split, index = png.stem.rsplit("_", 1)
        i = int(index)
        with Image.open(png) as im:
            assert im.mode == "L"
            pixels = np.asarray(im)
        assert np.array_equal(pixels, src[f"{source_split}_images"][i]), png
        assert class_dir == config.CLASS_DIRS[src[f"{source_split}_labels"][i]]
        assert i not in seen[source_split]
        assert (source_split == "test") == (split == "test")  # test images stay in test; val comes from train
        seen[source_split].add(i)
    assert seen["train"] == set(range(60000)) and seen["test"] == set(range(10000))


def test_real_rerun_skips(real_tree, monkeypatch):
    monkeypatch.setattr(convert, "write_tree", lambda *a, **k: pytest.fail("up-to-date tree rewritten"))
    monkeypatch.setattr(convert, "load", lambda *a, **k: pytest.fail("sources re-read although unchanged"))
    monkeypatch.chdir(ROOT)
    assert prepare(progress=False) == real_tree


def test_stock_yolo_cli_finds_tree_offline(real_tree, ultralytics_datasets_dir, tmp_path):
    """`yolo classify train data=fashion-mnist` from the project root trains on our tree, never downloads."""
    link = ultralytics_datasets_dir / "fashion-mnist"
    assert link.resolve() == real_tree.resolve()
    yolo = Path(sys.executable).parent / "yolo"  # the script installed beside this interpreter
    cmd = [
        str(yolo),
        "classify",
        "train",
        "data=fashion-mnist",
        "model=yolo11n-cls.yaml",
        "epochs=1",
        "imgsz=28",
        "fraction=0.01",
        "batch=64",
        "plots=False",
        f"project={tmp_path}",
        "name=stock",
    ]
    env = dict(os.environ, YOLO_OFFLINE="true")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "attempting download" not in log and "Downloading" not in log
    assert f"{real_tree}/val... found 5000 images in 10 classes" in log
    assert (tmp_path / "stock" / "weights" / "best.pt").exists()
