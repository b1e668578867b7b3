"""Strict reader for the IDX files Fashion-MNIST ships in (raw or gzip-compressed).

Parsing is a pure function over bytes; only `read_bytes` touches the file system.
Every violation raises `IDXError` naming the file, what was expected and what was found.
NumPy is imported by the parsers, not here: `prepare` with nothing to do reads no IDX payload.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IDXError

if TYPE_CHECKING:
    import numpy as np

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
ROWS = COLS = 28
NUM_CLASSES = 10
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> tuple[bytes, bytes]:
    """Read a file and return (raw file bytes, decompressed IDX payload).

    A file is decompressed when its content starts with the gzip magic; a name ending
    in `.gz` whose content is not gzip is an error rather than a guess.
    """
    path = Path(path)
    if not path.exists():
        raise IDXError(f"{path}: file not found")
    if not path.is_file():
        raise IDXError(f"{path}: expected a file, found a directory")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise IDXError(f"{path}: cannot read: {e.strerror}") from None
    if not raw:
        raise IDXError(f"{path}: file is empty (0 bytes)")
    if raw[:2] == GZIP_MAGIC:
        try:
            return raw, gzip.decompress(raw)
        except EOFError:
            raise IDXError(f"{path}: truncated gzip stream ({len(raw)} bytes)") from None
        except (OSError, zlib.error) as e:
            raise IDXError(f"{path}: corrupt gzip data ({e})") from None
    if path.suffix == ".gz":
        raise IDXError(f"{path}: named .gz but is not gzip data (starts with {raw[:4].hex()})")
    return raw, raw


def parse_images(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX3 image payload into an (N, 28, 28) uint8 array."""
    n, rows, cols = _parse_header(data, name, IMAGES_MAGIC, ndim=3)
    if (rows, cols) != (ROWS, COLS):
        raise IDXError(f"{name}: expected images of {ROWS}x{COLS}, found {rows}x{cols}")
    return _payload(data, name, (n, rows, cols))


def parse_labels(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX1 label payload into an (N,) uint8 array with values in 0..9."""
    import numpy as np

    (n,) = _parse_header(data, name, LABELS_MAGIC, ndim=1)
    labels = _payload(data, name, (n,))
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise IDXError(
            f"{name}: expected labels in 0..{NUM_CLASSES - 1}, found {labels[i]} at index {i} ({bad.size} out of range)"
        )
    return labels


def check_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    """Raise unless an image array and a label array describe the same number of items."""
    if len(images) != len(labels):
        raise IDXError(f"{labels_name}: expected {len(images)} labels to match {images_name}, found {len(labels)}")


def _parse_header(data: bytes, name: str, magic: int, ndim: int) -> tuple[int, ...]:
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise IDXError(f"{name}: expected an IDX header of {header_len} bytes, found {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IDXError(f"{name}: expected magic 0x{magic:08x}, found 0x{found:08x}")
    if len(data) < header_len:
        raise IDXError(f"{name}: expected an IDX header of {header_len} bytes, found {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] == 0:
        raise IDXError(f"{name}: header declares 0 items")
    return dims


def _payload(data: bytes, name: str, shape: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    offset = 4 + 4 * len(shape)
    expected = math.prod(shape)
    found = len(data) - offset
    if found != expected:
        dims = "x".join(map(str, shape))
        raise IDXError(f"{name}: expected a payload of {expected} bytes ({dims}), found {found} bytes")
    # Copy so the array owns writable memory rather than viewing the bytes object.
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()
