"""Find, download and verify the four Fashion-MNIST IDX files.

Resolution order: explicit directory, $FMNIST_SOURCE, the project's raw directory, Debian's
package, then a download from the official mirrors into the project's raw directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import DEBIAN_DIR, DEFAULTS, MIRRORS, SOURCE_ENV, SOURCE_FILES
from ..errors import ChecksumError, DataError, IDXError
from . import idx

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Source:
    """A directory holding the four IDX files and where it was found."""

    dir: Path
    origin: str  # "source=", "$FMNIST_SOURCE", "project raw dir", "debian package" or "download"
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Arrays:
    """The decoded data set and a fingerprint of each source file."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    fingerprints: dict[str, dict]  # key -> {path, size, mtime_ns, payload_sha256, verified}


def locate_files(directory: Path) -> dict[str, Path]:
    """Map each key to its file in `directory` (`NAME.gz` preferred over raw `NAME`).

    Raises:
        IDXError: the directory is missing, is a file, is empty or lacks a file.
    """
    directory = Path(directory)
    if not directory.exists():
        raise IDXError(f"{directory}: source directory not found")
    if not directory.is_dir():
        raise IDXError(f"{directory}: source path is a file, expected a directory of IDX files")
    if not any(directory.iterdir()):
        raise IDXError(f"{directory}: source directory is empty, expected the four Fashion-MNIST IDX files")
    found, missing = {}, []
    for key, (name, _, _) in SOURCE_FILES.items():
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.exists():
                found[key] = candidate
                break
        else:
            missing.append(f"{name}.gz")
    if missing:
        raise IDXError(f"{directory}: missing {', '.join(missing)}")
    return found


def _has_files(directory: Path) -> bool:
    try:
        locate_files(directory)
        return True
    except IDXError:
        return False


def resolve_source(source: str | Path | None = None, raw_dir: Path | None = None, download: bool = True) -> Source:
    """Find the IDX files in the documented order, downloading them as the last resort."""
    if source is not None:
        return Source(Path(source), "source=", locate_files(Path(source)))
    if env := os.environ.get(SOURCE_ENV):
        return Source(Path(env), f"${SOURCE_ENV}", locate_files(Path(env)))
    raw_dir = Path(raw_dir or DEFAULTS.raw_dir)
    for directory, origin in ((raw_dir, "project raw dir"), (DEBIAN_DIR, "debian package")):
        if _has_files(directory):
            return Source(directory, origin, locate_files(directory))
    if not download:
        raise DataError(f"{raw_dir}: no Fashion-MNIST files found and downloading is disabled")
    download_official(raw_dir)
    return Source(raw_dir, "download", locate_files(raw_dir))


def verify(key: str, path: Path, raw: bytes, payload: bytes) -> str:
    """Check a file against the official checksums; return the payload SHA-256.

    A `.gz` is accepted when its own MD5 is the official one or its decompressed payload has the
    official SHA-256, so recompressed copies pass; a raw IDX file only by its payload.
    """
    name, gz_md5, payload_sha = SOURCE_FILES[key]
    found = hashlib.sha256(payload).hexdigest()
    if found == payload_sha or (raw is not payload and hashlib.md5(raw).hexdigest() == gz_md5):
        return found
    raise ChecksumError(
        f"{path}: checksum mismatch for {name}: expected payload sha256 {payload_sha[:16]}..., found {found[:16]}... "
        "(verify=False for your own IDX files)"
    )


def load(source: Source, verify_checksums: bool = True) -> Arrays:
    """Read, parse and (optionally) verify all four files; nothing is written.

    Structure is checked before checksums so that a damaged file gets the specific error.
    """
    arrays, fingerprints, read = {}, {}, {}
    for key, path in source.files.items():
        raw, payload = read[key] = idx.read_bytes(path)
        parse = idx.parse_images if key.endswith("images") else idx.parse_labels
        arrays[key] = parse(payload, str(path))
    for split in ("train", "test"):
        idx.check_pair(
            arrays[f"{split}_images"], arrays[f"{split}_labels"],
            str(source.files[f"{split}_images"]), str(source.files[f"{split}_labels"]),
        )  # fmt: skip
    for key, path in source.files.items():
        raw, payload = read.pop(key)
        sha = verify(key, path, raw, payload) if verify_checksums else hashlib.sha256(payload).hexdigest()
        st = path.stat()
        fingerprints[key] = {
            "path": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "payload_sha256": sha,
            "verified": verify_checksums,
        }
    return Arrays(**arrays, fingerprints=fingerprints)


DOWNLOAD_TIMEOUT = 30.0  # seconds without a byte before a mirror is given up


def fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Stream `url` into `dest` as sent; ConnectionError on HTTP errors, a stall over `timeout` s or a short body.

    Ultralytics' `safe_download` would wait 300 s on a stalled connection (hard-coded), and retry;
    a mirror that hangs must instead give way to the next one quickly.
    """
    import requests
    from urllib3.exceptions import HTTPError as TransferError
    from urllib3.exceptions import ReadTimeoutError

    log.info(f"Downloading {url} ...")
    expected = 0
    try:
        with requests.get(url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}) as r:
            r.raise_for_status()
            expected = int(r.headers.get("Content-Length") or 0)
            with open(dest, "wb") as f:
                for chunk in r.raw.stream(1 << 20, decode_content=False):  # the .gz bytes themselves
                    f.write(chunk)
    except (requests.Timeout, ReadTimeoutError):
        raise ConnectionError(f"stalled: no data for {timeout:g}s") from None
    except requests.RequestException as e:
        raise ConnectionError(str(e).splitlines()[0] or type(e).__name__) from None
    except TransferError as e:  # the body is streamed by urllib3 itself: the connection broke mid-file
        size = dest.stat().st_size if dest.exists() else 0
        raise ConnectionError(f"interrupted: {size} of {expected or '?'} bytes ({type(e).__name__})") from None
    if expected and dest.stat().st_size != expected:
        raise ConnectionError(f"interrupted: {dest.stat().st_size} of {expected} bytes")
    return dest


def download_official(raw_dir: Path, mirrors: tuple[str, ...] | None = None, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download the four files into `raw_dir`, publishing each only after its checksum passed.

    Each file goes to a private temporary directory first, so an interrupted, stalled or corrupt
    download never appears in `raw_dir`; a failing mirror gives way to the next.
    """
    raw_dir, mirrors = Path(raw_dir), mirrors or MIRRORS
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{raw_dir}: cannot create download directory: {e.strerror}") from None
    for key, (name, _, _) in SOURCE_FILES.items():
        final = raw_dir / f"{name}.gz"
        if final.exists():
            continue
        errors = []
        for mirror in mirrors:
            tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=raw_dir))
            try:
                got = fetch(f"{mirror}{name}.gz", tmp / f"{name}.gz", timeout)
                raw, payload = idx.read_bytes(got)
                verify(key, final, raw, payload)
                os.replace(got, final)
                break
            except (ConnectionError, OSError, DataError) as e:
                errors.append(f"{mirror}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise DataError(
                f"{final}: download failed from every mirror ({'; '.join(errors)}); "
                f"install Debian's dataset-fashion-mnist or pass source=DIR"
            )
