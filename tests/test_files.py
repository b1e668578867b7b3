"""Atomic writes, and reads of damaged files that name the file."""

import errno
import os

import pytest

from fmnist_yolo.errors import ConfigError, RunError
from fmnist_yolo.files import atomic_path, naming, read_csv, read_json, read_yaml, write_text


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("reader, text, says", [
    (read_json, "{", "not valid JSON"), (read_yaml, "a: [", "not valid YAML"),
    (read_csv, "", "not a valid CSV table"),
])  # fmt: skip
def test_damaged_files(reader, text, says, tmp_path):
    path = tmp_path / "f"
    path.write_text(text)
    with pytest.raises(RunError, match=f"{path}: thing is {says}"):
        reader(path, RunError, "thing")


def test_missing_binary_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="nope: thing not found"):
        read_json(tmp_path / "nope", ConfigError, "thing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ConfigError, match="bin: thing is not a text file"):
        read_json(tmp_path / "bin", ConfigError, "thing")
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml(tmp_path, ConfigError, "thing")


def test_csv_columns_are_required(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert list(read_csv(tmp_path / "t.csv", RunError, "table", ("a",)).columns) == ["a", "b"]
    with pytest.raises(RunError, match="lacks the column\\(s\\) c"):
        read_csv(tmp_path / "t.csv", RunError, "table", ("a", "c"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (not Linux)")
def test_a_full_disk_names_the_file(tmp_path):
    """A real ENOSPC (from /dev/full: write() and close() know no file name) names the file being written."""
    with pytest.raises(OSError) as raw, open("/dev/full", "w") as f:
        f.write("x")
    assert raw.value.errno == errno.ENOSPC and raw.value.filename is None  # what the kernel gives
    target = tmp_path / "a.json"
    write_text(target, "old")
    (tmp_path / ".a.tmp.json").symlink_to("/dev/full")  # the temporary file atomic_path writes: on a full disk
    with pytest.raises(OSError) as full:
        write_text(target, "new")
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(target), full.value
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(OSError) as named, naming(tmp_path / "b"), open("/dev/full", "w") as f:
        f.write("x")
    assert named.value.filename == str(tmp_path / "b") and str(tmp_path / "b") in str(named.value)
    with pytest.raises(OSError) as kept, naming(tmp_path / "b"):
        open(tmp_path / "no" / "such")
    assert kept.value.filename == str(tmp_path / "no" / "such")  # a name the error had is kept
