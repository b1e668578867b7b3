"""`fmnist-yolo check`: a tree verified against its manifest, damage reported by path, repaired by prepare."""

import shutil

import cv2
import numpy as np
import pytest

from fmnist_yolo import prepare
from fmnist_yolo.data.check import check
from tests.conftest import run_cli, tree_digest


@pytest.fixture
def tree(source, tmp_path):
    out = prepare(source=source, out=tmp_path / "fm", verify=False, val_size=10, workers=1, progress=False)
    return out, tree_digest(out)


def test_intact_tree_passes_and_ignores_ultralytics_caches(tree, capsys):
    out, _ = tree
    for split in ("train", "val", "test"):
        (out / f"{split}.cache").write_bytes(b"ultralytics label cache")
    (out / "train" / "0_tshirt_top.cache").write_bytes(b"")
    assert check(out).empty
    code, stdout, _ = run_cli(["check", str(out)], capsys)
    assert code == 0 and "OK, every image matches the manifest" in stdout


def test_damage_is_reported_by_path_and_force_repairs(tree, source, capsys):
    out, digest = tree
    pngs = sorted(out.rglob("*.png"))
    missing, truncated, garbled, modified = (p.relative_to(out) for p in pngs[:4])
    (out / missing).unlink()
    data = (out / truncated).read_bytes()
    (out / truncated).write_bytes(data[: len(data) // 2])
    garbage = bytearray((out / garbled).read_bytes())
    garbage[40:60] = b"\xff" * 20  # inside the image data: the PNG no longer decodes
    (out / garbled).write_bytes(bytes(garbage))
    image = cv2.imread(str(out / modified), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(out / modified), np.ascontiguousarray(255 - image))  # a valid PNG, other pixels
    extra = out / "test" / "8_bag" / "stray.png"
    shutil.copy(out / pngs[5].relative_to(out), extra)

    found = check(out).set_index("path")["problem"].to_dict()
    assert found == {str(missing): "missing", str(truncated): "truncated", str(garbled): "corrupted",
                     str(modified): "corrupted", "test/8_bag/stray.png": "extra"}  # fmt: skip
    code, stdout, err = run_cli(["check", str(out)], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"Error: {out}: 5 problems (") and "2 corrupted" in err and "prepare force=True" in err
    for path in (missing, truncated, garbled, modified):
        assert str(out / path) in stdout
    assert "decodes, but checksum differs" in stdout and "not a decodable PNG" in stdout

    argv = ["prepare", f"source={source}", f"out={out}", "verify=False", "force=True", "val_size=10", "workers=1"]
    code, _, _ = run_cli(argv, capsys)
    assert code == 0 and check(out).empty and tree_digest(out) == digest


@pytest.mark.parametrize("damage, message", [
    ("no manifest", "no readable manifest.json"),
    ("list edited", "files.sha256: does not match the hash recorded in manifest.json"),
    ("not a dir", "dataset directory not found"),
])  # fmt: skip
def test_unusable_tree(damage, message, tree, capsys):
    out, _ = tree
    if damage == "no manifest":
        (out / "manifest.json").unlink()
    elif damage == "list edited":
        listing = out / "files.sha256"
        listing.write_text(listing.read_text().replace("train/", "train//", 1))
    else:
        out = out / "nothing"
    code, _, err = run_cli(["check", str(out)], capsys)
    assert code == 1 and message in err and err.count("\n") == 1


def test_parallel_check_agrees(tree, monkeypatch):
    """Many small chunks over two worker processes find exactly what one process finds, damage in several chunks."""
    import fmnist_yolo.data.check as check_module

    out, _ = tree
    pngs = sorted(out.rglob("*.png"))
    for p in pngs[3::25]:  # about one damaged file in every 2.5 chunks of 10
        p.write_bytes(p.read_bytes()[:30])
    pngs[7].unlink()
    monkeypatch.setattr(check_module, "CHUNK_FILES", 10)
    used = []
    real_pool = check_module.pool
    monkeypatch.setattr(check_module, "pool", lambda n: used.append(n) or real_pool(n))
    serial = check(out, workers=1)
    assert used == []
    parallel = check(out, workers=2)
    assert used == [2]  # the pool really ran
    assert len(serial) == len(pngs[3::25]) + 1 and serial.equals(parallel)
