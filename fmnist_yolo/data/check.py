"""Verify a prepared tree against its manifest: every listed image present, unchanged and decodable."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import DataError
from .tree import CHECKSUMS, MANIFEST, read_listing, read_manifest
from .workers import pool

PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG
# Written into the tree by others: Ultralytics' label caches (train.cache, ...), editors' and OS droppings are not.
IGNORED_SUFFIXES = (".cache",)
CHUNK_FILES = 2000  # files a worker process checks per task: large enough that the pool's overhead does not show


def png_problem(data: bytes, expected_sha: str) -> tuple[str, str] | None:
    """None when `data` is the expected PNG; else (problem, detail)."""
    if hashlib.sha256(data).hexdigest() == expected_sha:
        return None
    if not data.rstrip(b"\0").endswith(PNG_END):
        return "truncated", f"{len(data)} bytes, no PNG end marker"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        return "corrupted", "not a decodable PNG"
    return "corrupted", "decodes, but checksum differs from the manifest (modified)"


def _check_files(root: str, items: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(path, problem, detail) for each (path, sha256) that is unreadable or differs. Runs in worker processes."""
    problems = []
    for rel, sha in items:
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            problems.append((rel, "missing", "listed in files.sha256"))
            continue
        except OSError as e:
            problems.append((rel, "unreadable", e.strerror or str(e)))
            continue
        if found := png_problem(data, sha):
            problems.append((rel, *found))
    return problems


def check(tree: str | Path, workers: int | None = None) -> pd.DataFrame:
    """Check `tree` against its manifest; return one row per problem (empty when the tree is intact).

    Returns:
        Columns path (relative to the tree), problem (missing, extra, truncated, corrupted, unreadable)
        and detail. Ultralytics' `*.cache` files are not problems.
    """
    tree = Path(tree)
    if not tree.is_dir():
        raise DataError(f"{tree}: dataset directory not found")
    manifest = read_manifest(tree)
    if manifest is None:
        raise DataError(f"{tree}: no readable {MANIFEST} (not a tree written by `fmnist-yolo prepare`)")
    listing = read_listing(tree, manifest)
    own = {(MANIFEST,), (CHECKSUMS,)}
    on_disk = {
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        if p.is_file() and not p.name.endswith(IGNORED_SUFFIXES) and p.relative_to(tree).parts not in own
    }
    items = sorted(listing.items())
    chunks = [items[i : i + CHUNK_FILES] for i in range(0, len(items), CHUNK_FILES)]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(chunks) <= 1:
        results = [_check_files(str(tree), c) for c in chunks]
    else:
        with pool(workers) as executor:
            results = list(executor.map(_check_files, [str(tree)] * len(chunks), chunks))
    rows = [r for chunk in results for r in chunk]
    rows += [(rel, "extra", "not listed in files.sha256") for rel in sorted(on_disk - set(listing))]
    table = pd.DataFrame(rows, columns=["path", "problem", "detail"])
    return table.sort_values("path", ignore_index=True)
