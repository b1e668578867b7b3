"""The strict IDX reader: good files parse exactly, every malformed file names its problem."""

import gzip
import struct

import numpy as np
import pytest

from fmnist_yolo.data import idx
from fmnist_yolo.errors import IDXError
from tests.conftest import images_idx, labels_idx


def test_parse_round_trip(arrays):
    images = idx.parse_images(images_idx(arrays["train_images"]), "x")
    labels = idx.parse_labels(labels_idx(arrays["train_labels"]), "y")
    assert images.dtype == np.uint8 and images.shape == arrays["train_images"].shape
    np.testing.assert_array_equal(images, arrays["train_images"])
    np.testing.assert_array_equal(labels, arrays["train_labels"])
    assert images.flags.writeable


@pytest.mark.parametrize("gz", [True, False])
def test_read_bytes_gz_and_raw(tmp_path, arrays, gz):
    data = images_idx(arrays["test_images"])
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(data) if gz else data)
    raw, payload = idx.read_bytes(path)
    assert payload == data
    assert (raw != payload) == gz


IMG = np.zeros((3, 28, 28), np.uint8)
LAB = np.array([0, 1, 2], np.uint8)

BAD_IMAGES = {
    "wrong magic": (
        struct.pack(">IIII", 0x801, 3, 28, 28) + IMG.tobytes(),
        "expected magic 0x00000803, found 0x00000801",
    ),
    "wrong dims": (
        struct.pack(">IIII", 0x803, 3, 32, 32) + bytes(3 * 32 * 32),
        "expected images of 28x28, found 32x32",
    ),
    "short payload": (images_idx(IMG)[:-1], "expected a payload of 2352 bytes (3x28x28), found 2351 bytes"),
    "long payload": (images_idx(IMG) + b"\0", "expected a payload of 2352 bytes (3x28x28), found 2353 bytes"),
    "header only": (images_idx(IMG)[:16], "found 0 bytes"),
    "short header": (images_idx(IMG)[:10], "expected an IDX header of 16 bytes, found 10 bytes"),
    "zero items": (struct.pack(">IIII", 0x803, 0, 28, 28), "header declares 0 items"),
    "garbage": (b"\x89PNG garbage bytes" * 10, "expected magic 0x00000803"),
}
BAD_LABELS = {
    "wrong magic": (struct.pack(">II", 0x803, 3) + LAB.tobytes(), "expected magic 0x00000801, found 0x00000803"),
    "label 12": (labels_idx(np.array([0, 12, 3], np.uint8)), "expected labels in 0..9, found 12 at index 1"),
    "short payload": (labels_idx(LAB)[:-2], "expected a payload of 3 bytes (3), found 1 bytes"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images(case):
    data, message = BAD_IMAGES[case]
    with pytest.raises(IDXError, match="^images.gz: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        idx.parse_images(data, "images.gz")


@pytest.mark.parametrize("case", BAD_LABELS)
def test_bad_labels(case):
    data, message = BAD_LABELS[case]
    with pytest.raises(IDXError, match="^labels: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        idx.parse_labels(data, "labels")


def test_count_mismatch():
    with pytest.raises(IDXError, match="lab: expected 3 labels to match img, found 2"):
        idx.check_pair(IMG, LAB[:2], "img", "lab")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"not gzip at all", "named .gz but is not gzip data"),
        (gzip.compress(images_idx(IMG))[:40], "truncated gzip stream"),
        (b"\x1f\x8b" + b"\xff" * 30, "corrupt gzip data"),
    ],
    ids=["missing", "empty", "not-gzip", "truncated", "corrupt"],
)
def test_read_bytes_errors(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(IDXError, match=f"^{path}: {message}"):
        idx.read_bytes(path)


def test_read_bytes_directory(tmp_path):
    with pytest.raises(IDXError, match="expected a file, found a directory"):
        idx.read_bytes(tmp_path)
