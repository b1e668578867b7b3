"""The converter: layout, pixel-exact PNGs, stratified val, determinism, atomicity, bad input via the CLI."""

import errno
import gzip
import json
import os
import struct

import cv2
import numpy as np
import pytest

from fmnist_yolo import config, prepare
from fmnist_yolo.data import prepare as convert
from fmnist_yolo.errors import FmnistError
from tests.conftest import NAMES, images_idx, labels_idx, one_error, run_cli, tree_digest, write_source


def build(source, out, **kw):
    kw.setdefault("verify", False)
    return prepare(source=source, out=out, workers=1, progress=False, **kw)


def test_layout_and_pixels(source, arrays, tmp_path):
    out = build(source, tmp_path / "fm", val_size=20, split_seed=3)
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == list(config.CLASS_DIRS)
    assert list(config.CLASS_DIRS) == sorted(config.CLASS_DIRS)  # string sort = label order
    seen = {"train": set(), "test": set()}
    for png in out.rglob("*.png"):
        split, class_dir = png.parts[-3], png.parts[-2]
        source_split, index = png.stem.rsplit("_", 1)
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (28, 28)  # 8-bit grey, not RGB
        np.testing.assert_array_equal(image, arrays[f"{source_split}_images"][int(index)])
        assert class_dir == config.CLASS_DIRS[arrays[f"{source_split}_labels"][int(index)]]
        assert (source_split == "test") == (split == "test")
        seen[source_split].add(int(index))
    assert seen["train"] == set(range(80)) and seen["test"] == set(range(30))


def test_val_is_stratified_seeded_and_test_never_moves(source, arrays, tmp_path):
    a = build(source, tmp_path / "a", val_size=20, split_seed=0)
    b = build(source, tmp_path / "b", val_size=20, split_seed=1)
    counts = json.loads((a / "manifest.json").read_text())["counts"]
    assert set(counts["val"].values()) == {2} and set(counts["train"].values()) == {6}
    names = lambda t, s: sorted(p.name for p in (t / s).rglob("*.png"))  # noqa: E731
    assert names(a, "val") != names(b, "val")  # the seed matters
    assert names(a, "test") == names(b, "test")


def test_val_split_is_pinned():
    """The hold-out is a published fact of every tree: the same labels, size and seed give these indices, forever."""
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(10), 8)).astype(np.uint8)
    seed0 = [4, 5, 8, 9, 11, 13, 16, 18, 19, 20, 28, 36, 43, 47, 50, 52, 53, 64, 65, 66]
    seed1 = [3, 6, 14, 15, 16, 17, 25, 27, 31, 33, 34, 35, 47, 48, 52, 54, 55, 63, 68, 75]
    assert convert.split_val(labels, 20, 0).tolist() == seed0
    assert convert.split_val(labels, 20, 1).tolist() == seed1
    assert np.bincount(labels[seed0], minlength=10).tolist() == [2] * 10  # stratified: 2 of each class
    remainder = convert.split_val(labels, 21, 0)
    assert np.bincount(labels[remainder], minlength=10).tolist() == [3] + [2] * 9  # the extra one: lowest label


def test_val_zero_is_ultralytics_layout(source, tmp_path):
    out = build(source, tmp_path / "fm", val_size=0)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train"]
    assert len(list((out / "train").rglob("*.png"))) == 80


def test_val_too_large(source, tmp_path):
    with pytest.raises(FmnistError, match="leaves no training images"):
        build(source, tmp_path / "fm", val_size=80)


def test_deterministic(source, tmp_path):
    a = build(source, tmp_path / "a", val_size=10)
    b = build(source, tmp_path / "b", val_size=10)
    assert tree_digest(a) == tree_digest(b)
    prepare(source=source, out=a, val_size=10, verify=False, force=True, workers=2, progress=False)
    assert tree_digest(a) == tree_digest(b)  # parallel writer, same bytes


def test_progress_bar_on_stderr_and_result_line(source, tmp_path, capsys):
    code, out, err = run_cli(["prepare", f"source={source}", f"out={tmp_path / 'fm'}", "verify=False", "workers=1",
                              "val_size=10", "link=False"], capsys)  # fmt: skip
    assert code == 0 and out == ""
    bar, result = err.rstrip("\n").rsplit("\n", 1)
    assert "Writing PNGs" in bar and "110/110" in bar  # tqdm's bar, finished
    assert result.startswith(f"Prepared {tmp_path / 'fm'} from {source}") and "train 70, val 10, test 30" in result


def test_progress_false_is_silent(source, tmp_path, capsys, caplog):
    prepare(source=source, out=tmp_path / "fm", val_size=10, verify=False, workers=1, progress=False, link=False)
    assert capsys.readouterr() == ("", "") and not caplog.records


def test_noop_imports_no_heavy_modules(source, tmp_path):
    """A `prepare` with nothing to do stays fast (benchmarks/bench_prepare_noop.py): it imports no OpenCV, NumPy,
    progress bar, torch or Ultralytics."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "fm"
    build(source, out, val_size=10, link=False)
    script = (
        "import sys\n"
        "from fmnist_yolo.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(code, sorted(m for m in ('cv2', 'numpy', 'tqdm', 'torch', 'ultralytics') if m in sys.modules))\n"
    )
    argv = ["prepare", f"source={source}", f"out={out}", "verify=False", "val_size=10", "link=False"]
    repo = Path(__file__).resolve().parents[1]  # this checkout's fmnist_yolo, not an installed one
    r = subprocess.run([sys.executable, "-c", script, *argv], cwd=repo, capture_output=True, text=True, timeout=60)
    assert "is up to date" in r.stderr, r.stderr
    assert r.stdout.split(maxsplit=1) == ["0", "[]\n"], r.stdout + r.stderr


def test_checksum_list_matches_files(source, tmp_path):
    import hashlib

    out = build(source, tmp_path / "fm", val_size=10)
    lines = (out / "files.sha256").read_text().splitlines()
    assert len(lines) == 110
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_rerun_skips_and_force_rebuilds(source, tmp_path, monkeypatch):
    out = build(source, tmp_path / "fm", val_size=10)
    stamp = (out / "manifest.json").stat().st_mtime_ns

    def no_write(*a, **k):
        raise AssertionError("tree rewritten although up to date")

    monkeypatch.setattr(convert, "write_tree", no_write)
    build(source, out, val_size=10)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError):  # other options: rebuild
        build(source, out, val_size=20)
    with pytest.raises(AssertionError):
        build(source, out, val_size=10, force=True)


def test_rerun_with_same_payload_elsewhere_skips(source, arrays, tmp_path, monkeypatch):
    out = build(source, tmp_path / "fm", val_size=10)
    copy = tmp_path / "copy"
    write_source(copy, arrays, gz=False)  # same payloads, raw instead of gzip
    monkeypatch.setattr(convert, "write_tree", lambda *a, **k: pytest.fail("rewritten"))
    build(copy, out, val_size=10)


def test_failure_mid_write_keeps_old_tree(source, tmp_path, monkeypatch):
    out = build(source, tmp_path / "fm", val_size=10)
    before = tree_digest(out)
    real, calls = convert._write_chunk, []

    def failing(root, names, images):
        calls.append(1)
        real(root, names[:5], images[:5])
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(root, names[5]))

    monkeypatch.setattr(convert, "_write_chunk", failing)
    with pytest.raises(FmnistError, match="No space left on device"):
        build(source, out, val_size=10, force=True)
    assert calls and tree_digest(out) == before
    assert not list(tmp_path.glob(".fm.tmp-*"))


def test_stale_temp_dirs_are_cleaned(source, tmp_path):
    stale = tmp_path / ".fm.tmp-999999"
    (stale / "train").mkdir(parents=True)
    build(source, tmp_path / "fm", val_size=10)
    assert not stale.exists()


def test_parked_old_tree_is_restored(source, tmp_path):
    """A kill between the two renames of the fallback swap leaves the old tree parked: put it back."""
    out = build(source, tmp_path / "fm", val_size=10)
    digest = tree_digest(out)
    parked = tmp_path / ".fm.old-4242"
    os.replace(out, parked)
    (parked / "marker").write_text("the parked tree")  # a rebuild would not have it (inodes can be reused)
    build(source, out, val_size=10)
    assert (out / "marker").read_text() == "the parked tree" and not parked.exists()  # put back, not rebuilt
    (out / "marker").unlink()
    assert tree_digest(out) == digest


def test_fallback_swap_without_rename_exchange(source, tmp_path, monkeypatch):
    out = build(source, tmp_path / "fm", val_size=10)
    monkeypatch.setattr(convert, "_rename_exchange", lambda a, b: False)
    build(source, out, val_size=20)
    assert json.loads((out / "manifest.json").read_text())["options"]["val"] == 20
    assert not list(tmp_path.glob(".fm.*-*"))


# --- bad input, through the CLI, with and without --no-verify -------------------------------

IMG = np.zeros((80, 28, 28), np.uint8)
NOISE = np.random.default_rng(0).integers(0, 256, (80, 28, 28), dtype=np.uint8)


def _set(key, data, gz=True):
    def mutate(src):
        path = src / f"{NAMES[key]}.gz"
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return mutate


def _delete(src):
    path = src / f"{NAMES['train_labels']}.gz"
    path.unlink()
    return src


BAD_FILES = {
    "missing file": (_delete, "missing train-labels-idx1-ubyte.gz"),
    "empty file": (_set("train_images", b"", gz=False), "file is empty"),
    "truncated gzip": (_set("train_images", gzip.compress(images_idx(NOISE))[:500], gz=False), "truncated gzip stream"),
    "non-gzip .gz": (_set("train_images", images_idx(IMG), gz=False), "named .gz but is not gzip"),
    "wrong magic": (_set("train_images", images_idx(IMG, magic=0x802)), "expected magic 0x00000803, found 0x00000802"),
    "wrong dims": (
        _set("train_images", struct.pack(">IIII", 0x803, 80, 32, 32) + bytes(80 * 1024)),
        "expected images of 28x28, found 32x32",
    ),
    "payload short": (_set("train_images", images_idx(IMG)[:-10]), "found 62710 bytes"),
    "payload long": (_set("train_images", images_idx(IMG) + b"xx"), "found 62722 bytes"),
    "header only": (_set("train_images", images_idx(IMG)[:16]), "found 0 bytes"),
    "label 12": (_set("test_labels", labels_idx(np.full(30, 12))), "expected labels in 0..9, found 12"),
    "count mismatch": (_set("test_labels", labels_idx(np.zeros(29))), "expected 30 labels to match"),
    "garbage": (_set("test_labels", os.urandom(64), gz=False), "not gzip"),
}


@pytest.fixture
def good_tree(source, tmp_path):
    out = build(source, tmp_path / "fm", val_size=10)
    return out, tree_digest(out)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_source_file(case, verify, source, good_tree, trusted, capsys):
    out, digest = good_tree
    mutate, message = BAD_FILES[case]
    named = mutate(source)
    argv = ["prepare", f"source={source}", f"out={out}", "val_size=10", "force=True", "workers=1"]
    code, _, err = run_cli(argv + ([] if verify else ["verify=False"]), capsys)
    assert code == 1
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert str(named) in err and message in err
    assert tree_digest(out) == digest


def test_checksum_mismatch(source, arrays, good_tree, trusted, capsys):
    out, digest = good_tree
    changed = dict(arrays, test_images=255 - arrays["test_images"])  # valid IDX, other pixels
    write_source(source, changed)
    argv = ["prepare", f"source={source}", f"out={out}", "val_size=10", "force=True"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "t10k-images-idx3-ubyte.gz: checksum mismatch" in err and err.count("\n") == 1
    assert tree_digest(out) == digest
    assert run_cli(argv + ["verify=False", "workers=1"], capsys)[0] == 0  # own IDX files: allowed


def test_trusted_source_verifies(source, tmp_path, trusted):
    out = prepare(source=source, out=tmp_path / "fm", val_size=10, workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["verified"] is True


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing dir", "source directory not found"),
        ("empty dir", "source directory is empty"),
        ("file", "source path is a file"),
    ],
)
def test_bad_source_dir(kind, message, verify, tmp_path, good_tree, capsys):
    out, digest = good_tree
    src = tmp_path / "nowhere"
    if kind == "empty dir":
        src.mkdir()
    elif kind == "file":
        src.write_text("x")
    argv = ["prepare", f"source={src}", f"out={out}"] + ([] if verify else ["verify=False"])
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and err.startswith(f"Error: {src}: {message}") and err.count("\n") == 1
    assert tree_digest(out) == digest


def test_output_is_a_file(source, tmp_path, capsys):
    target = tmp_path / "fm"
    target.write_text("precious")
    code, _, err = run_cli(["prepare", f"source={source}", f"out={target}", "verify=False"], capsys)
    assert code == 1 and err == f"Error: {target}: output path exists and is a file\n"
    assert target.read_text() == "precious"


def test_unwritable_output(source, good_tree, monkeypatch, capsys):
    out, digest = good_tree
    if os.geteuid() != 0:  # a real read-only directory; root ignores permissions, so inject there
        os.chmod(out.parent, 0o555)
    else:
        monkeypatch.setattr(convert.os, "access", lambda p, mode: False)
    try:
        code, _, err = run_cli(["prepare", f"source={source}", f"out={out}", "verify=False", "force=True"], capsys)
    finally:
        os.chmod(out.parent, 0o755)
    assert code == 1 and err == f"Error: {out.parent}: output directory is not writable\n"
    assert tree_digest(out) == digest


def test_write_permission_error_names_file(source, good_tree, monkeypatch, capsys):
    out, digest = good_tree

    def denied(root, names, images):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(root, names[0]))

    monkeypatch.setattr(convert, "_write_chunk", denied)
    code, _, err = run_cli(
        ["prepare", f"source={source}", f"out={out}", "verify=False", "force=True", "workers=1", "val_size=10"], capsys
    )
    line = one_error(err)  # after the progress bar's line, which the failure ended
    assert code == 1 and "Permission denied" in line and ".png" in line and err.splitlines()[-1] == line
    assert tree_digest(out) == digest
