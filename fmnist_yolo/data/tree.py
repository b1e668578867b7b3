"""The prepared tree's contract: its layout, its manifest and file list, and whether it is what it claims to be.

    TREE/{train,val,test}/<i>_<class>/<source split>_<index>.png   8-bit grey PNGs, pixel-exact to the IDX data
    TREE/manifest.json   format, options (val size, split seed), source checksums, counts per split and class,
                         and the hash of files.sha256
    TREE/files.sha256    one `sha256  relative/path` line per image (`sha256sum -c` reads it)

prepare.py is its one writer; check.py, training and evaluation read it through the functions here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import CLASS_DIRS
from ..errors import DataError

FORMAT = 1  # bump when the tree layout or file encoding changes; older trees are then rebuilt
MANIFEST = "manifest.json"
CHECKSUMS = "files.sha256"
IMAGE_SUFFIX = ".png"
VAL_DIRS = ("val", "validation", "valid")  # the folders Ultralytics takes as the val split, in the order it looks


def read_manifest(tree: Path) -> dict | None:
    """The manifest of a prepared tree, or None when there is none readable."""
    try:
        return json.loads((Path(tree) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def manifest_checksum(tree: Path) -> str | None:
    """SHA-256 of a tree's manifest file, which pins every image through its file list hash."""
    try:
        return hashlib.sha256((Path(tree) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def identity(tree: Path) -> dict:
    """What makes a tree the same tree by content, from its manifest: the hash of its file list (every image's
    SHA-256), the layout format and split options, and the sources it was prepared from (their payload hashes, and
    their paths: where to rebuild it from). Not the manifest's own checksum, which also holds the sources' mtimes
    and the package version. {} for a tree without a manifest."""
    manifest = read_manifest(tree)
    if not isinstance(manifest, dict):
        return {}
    sources = manifest.get("sources") or {}
    return {
        "files_sha256": manifest.get("files_sha256"), "format": manifest.get("format"),
        "options": manifest.get("options"), "verified": manifest.get("verified"),
        "sources": {k: {"path": v.get("path"), "payload_sha256": v.get("payload_sha256")} for k, v in sources.items()
                    if isinstance(v, dict)},
    }  # fmt: skip


def content_checksum(tree: Path) -> str | None:
    """SHA-256 of what a tree holds (its `identity` less where its sources lay and whether they were checked): equal
    on every machine that prepared the same data with the same options, where the manifest file's own checksum is
    not (a download's path and mtime differ). None: no manifest."""
    ident = identity(tree)
    if not ident:
        return None
    content = {**ident, "verified": None,
               "sources": {k: v.get("payload_sha256") for k, v in ident["sources"].items()}}  # fmt: skip
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_listing(tree: Path, manifest: dict) -> dict[str, str]:
    """files.sha256 as {relative path: sha256}, after checking it against the manifest's hash of it."""
    path = tree / CHECKSUMS
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file list: {e.strerror}") from None
    if hashlib.sha256(text.encode()).hexdigest() != manifest.get("files_sha256"):
        raise DataError(f"{path}: does not match the hash recorded in {MANIFEST} (file list edited or damaged)")
    return {rel: sha for sha, _, rel in (line.partition("  ") for line in text.splitlines())}


def val_split(tree: Path) -> Path | None:
    """The tree's val split as Ultralytics finds it (check_cls_dataset: val/, else validation/, else valid/), or None:
    a tree prepared with val_size=0, on which Ultralytics selects best.pt on test/."""
    return next((Path(tree) / d for d in VAL_DIRS if (Path(tree) / d).is_dir()), None)


def find_tree(data: str | Path) -> Path | None:
    """A tree as a command or a run names it, where it is: a path, or a name under Ultralytics' datasets_dir (resolved
    the way Ultralytics resolves `data=`); None when neither is a folder. Nothing is prepared here."""
    if Path(data).is_dir():
        return Path(data).absolute()
    from ultralytics.utils import DATASETS_DIR

    return (DATASETS_DIR / data).resolve() if (DATASETS_DIR / data).is_dir() else None


def prepare_args(manifest: dict | None) -> dict:
    """The `prepare` arguments that rebuild a tree as its manifest records it (val_size, split_seed, verify; only
    those the manifest holds): the manifest's own names, `val` and `seed`, are older than prepare's."""
    manifest = manifest if isinstance(manifest, dict) else {}
    options = manifest.get("options") or {}
    args = {new: options[old] for old, new in (("val", "val_size"), ("seed", "split_seed")) if old in options}
    return {**args, "verify": bool(manifest["verified"])} if "verified" in manifest else args


def repair_hint(tree: Path, listed: bool = False) -> str:
    """How to see and repair the damage in a prepared tree, said the same by every stage that finds it: `fmnist-yolo
    check` (left out where the caller has `listed` the problems already) and the `prepare` that rebuilds the tree
    with the options its manifest records."""
    args = prepare_args(read_manifest(tree))
    same = "".join(f" {key}={args[key]}" for key in ("val_size", "split_seed") if key in args)
    rebuild = f"`fmnist-yolo prepare force=True out={tree}{same}` rebuilds it"
    return rebuild if listed else f"`fmnist-yolo check {tree}` lists the damage; {rebuild}"


def counts_on_disk(tree: Path, split: str) -> dict[str, int]:
    """Images per class folder of one split, as they are on disk now (no decoding: cheap)."""
    d = Path(tree) / split
    return {c: sum(1 for p in (d / c).iterdir() if p.suffix == IMAGE_SUFFIX) if (d / c).is_dir() else 0
            for c in CLASS_DIRS}  # fmt: skip


def check_counts(tree: Path) -> None:
    """DataError unless every split has the images per class that the manifest says (a cheap check before use).

    A tree that is not fmnist-yolo's (no manifest) is not checked: it is the user's own.
    """
    manifest = read_manifest(tree)
    if manifest is None:
        return
    for split, expected in manifest.get("counts", {}).items():
        found = counts_on_disk(tree, split)
        for cls, n in expected.items():
            if found.get(cls, 0) != n:
                where = Path(tree) / split / cls
                raise DataError(f"{where}: {found.get(cls, 0)} images, the manifest says {n}; {repair_hint(tree)}")
