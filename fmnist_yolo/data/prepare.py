"""Write the IDX arrays as the class-folder tree Ultralytics' classification trainer reads.

    OUT/{train,val,test}/<i>_<class>/<source split>_<index>.png   8-bit grey, pixel-exact
    OUT/manifest.json   options, source checksums, counts      OUT/files.sha256   `sha256sum -c` list

The tree is built beside OUT and swapped in only when complete, under a lock, so a failure or a
kill leaves the previous tree as it was.

OpenCV, NumPy and tqdm are imported by the functions that use them: a `prepare` with nothing to do
imports none of them (tests/test_prepare.py::test_noop_imports_no_heavy_modules).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import CLASS_DIRS, DEFAULTS, check_options
from ..errors import ConfigError, DataError, FmnistError
from ..files import naming
from ..version import __version__
from .sources import Arrays, Source, load, resolve_source
from .tree import CHECKSUMS, FORMAT, MANIFEST, find_tree, read_manifest

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Stored deflate: 28x28 images gain ~15% from compression but encode 2.3x slower (39 against 17 µs an image,
# benchmarks/RESULTS.md, "Conversion"), and each file occupies a 4 KiB block either way.
PNG_COMPRESSION = 0
CHUNK = 2500  # images per worker task


def split_val(labels: np.ndarray, n_val: int, seed: int) -> np.ndarray:
    """Return the sorted indices of a stratified, seeded hold-out of `n_val` items.

    Each class gives n_val // classes items (the remainder goes to the lowest labels).
    """
    import numpy as np

    classes = np.unique(labels)
    if n_val < 0:
        raise ConfigError(f"val_size must be >= 0, found {n_val}")
    per_class = np.full(len(classes), n_val // len(classes))
    per_class[: n_val % len(classes)] += 1
    counts = np.bincount(labels, minlength=classes.max() + 1)[classes]
    if (per_class >= counts).any() and n_val:
        raise ConfigError(f"val_size={n_val} leaves no training images for some class (class sizes {counts.min()}..)")
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, shuffled within
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = [order[s : s + k] for s, k in zip(starts, per_class)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def plan(train_labels: np.ndarray, test_labels: np.ndarray, n_val: int, seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """Map each output split to (source split, sorted source indices)."""
    import numpy as np

    val_idx = split_val(train_labels, n_val, seed)
    train_idx = np.setdiff1d(np.arange(len(train_labels)), val_idx, assume_unique=True)
    layout = {"train": ("train", train_idx), "val": ("train", val_idx), "test": ("test", np.arange(len(test_labels)))}
    return {k: v for k, v in layout.items() if len(v[1])}


def file_names(split: str, source: str, indices: np.ndarray, labels: np.ndarray) -> list[str]:
    """Relative paths of the PNGs for `indices` of a source split."""
    return [f"{split}/{CLASS_DIRS[labels[i]]}/{source}_{i:05d}.png" for i in indices]


def encode(image: np.ndarray) -> bytes:
    """Encode one uint8 image as an 8-bit greyscale PNG."""
    import cv2  # once per process: a module lookup afterwards

    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise FmnistError("PNG encoding failed")
    return buf.tobytes()


def _write_chunk(root: str, names: list[str], images: np.ndarray) -> list[str]:
    """Write PNGs under `root`; return their SHA-256s. Runs in worker processes."""
    digests = []
    for name, image in zip(names, images):
        data = encode(image)
        path = os.path.join(root, name)
        with naming(path):  # a full disk's ENOSPC names no file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:  # write() may write less than asked (a nearly full disk): the rest, or its error
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        digests.append(hashlib.sha256(data).hexdigest())
    return digests


def write_tree(root: Path, arrays: Arrays, layout: dict, workers: int, progress: bool = True) -> dict[str, str]:
    """Write every PNG of `layout` under an empty `root`; return {relative path: sha256}.

    `progress` shows a tqdm bar on stderr, closed (its line ended) also when writing fails.
    """
    import cv2  # noqa: F401  here, before the pool forks: each worker inherits it instead of importing it
    from tqdm import tqdm

    from .workers import pool

    jobs = []
    for split, (source, indices) in layout.items():
        images, labels = getattr(arrays, f"{source}_images"), getattr(arrays, f"{source}_labels")
        for c, class_dir in enumerate(CLASS_DIRS):
            (root / split / class_dir).mkdir(parents=True)
            # One directory per job: workers then rarely create files in the same directory at once,
            # which the kernel serialises.
            members = indices[labels[indices] == c]
            names = file_names(split, source, members, labels)
            for s in range(0, len(members), CHUNK):
                jobs.append((names[s : s + CHUNK], images[members[s : s + CHUNK]]))
    digests: dict[str, str] = {}
    # tqdm, not Ultralytics' TQDM, which imports torch: +2 s, +500 MB a forked worker (benchmarks/RESULTS.md)
    with tqdm(total=sum(len(n) for n, _ in jobs), desc="Writing PNGs", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for names, images in jobs:
                digests.update(zip(names, _write_chunk(str(root), names, images)))
                bar.update(len(names))
        else:
            with pool(workers) as executor:
                futures = [(names, executor.submit(_write_chunk, str(root), names, images)) for names, images in jobs]
                try:
                    for names, future in futures:
                        digests.update(zip(names, future.result()))
                        bar.update(len(names))
                except BaseException:
                    executor.shutdown(cancel_futures=True)  # don't keep writing a tree that will be discarded
                    raise
    return digests


def manifest(arrays: Arrays, layout: dict, n_val: int, seed: int, verify: bool, digests: dict[str, str]) -> dict:
    """The tree's manifest: what went in, with which options, and what came out."""
    counts = {
        split: {d: int((getattr(arrays, f"{src}_labels")[idx] == c).sum()) for c, d in enumerate(CLASS_DIRS)}
        for split, (src, idx) in layout.items()
    }
    listing = "".join(f"{digests[k]}  {k}\n" for k in sorted(digests))
    return {
        "format": FORMAT,
        "fmnist_yolo": __version__,
        "options": {"val": n_val, "seed": seed},
        "verified": verify,
        "classes": list(CLASS_DIRS),
        "counts": counts,
        "total": len(digests),
        "sources": arrays.fingerprints,
        "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }, listing


def _up_to_date(old: dict | None, n_val: int, seed: int, verify: bool, source: Source | None, arrays=None) -> bool:
    if not old or old.get("format") != FORMAT or old.get("options") != {"val": n_val, "seed": seed}:
        return False
    if verify and not old.get("verified"):
        return False
    recorded = old.get("sources", {})
    if arrays is not None:  # payloads decoded: compare content
        return all(
            recorded.get(k, {}).get("payload_sha256") == v["payload_sha256"] for k, v in arrays.fingerprints.items()
        )
    if source is None:
        return False
    for key, path in source.files.items():  # cheap: same files, unchanged on disk
        st, rec = path.stat(), recorded.get(key, {})
        if (rec.get("path"), rec.get("size"), rec.get("mtime_ns")) != (str(path.resolve()), st.st_size, st.st_mtime_ns):
            return False
    return True


@contextlib.contextmanager
def _lock(out: Path):
    """Hold an exclusive lock beside `out` so concurrent prepares run one after the other."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic rename still protects the tree
        yield
        return
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"Waiting for another prepare of {out} to finish (lock {lock_path})...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _clean_stale(out: Path) -> None:
    """Remove leftovers of killed runs: temp trees, and an old tree parked during a swap."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out.parent.glob(f".{out.name}.old-*"):
        if out.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:  # killed between the two renames of the fallback swap: put the old tree back
            os.replace(p, out)


def _swap(new: Path, out: Path) -> None:
    """Make `new` the tree at `out` atomically; the previous tree is removed afterwards."""
    if not out.exists():
        os.replace(new, out)
        return
    if _rename_exchange(new, out):
        shutil.rmtree(new)  # now holds the previous tree
        return
    parked = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, parked)  # _clean_stale restores it if we die before the next line
    os.replace(new, out)
    shutil.rmtree(parked)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def prepare(
    source: str | Path | None = None,
    out: str | Path = DEFAULTS.out,
    val_size: int = DEFAULTS.val_size,
    split_seed: int = DEFAULTS.split_seed,
    force: bool = DEFAULTS.force,
    verify: bool = DEFAULTS.verify,
    workers: int | None = None,
    progress: bool = True,
    link: bool | None = None,
) -> Path:
    """Build (or confirm up to date) the Ultralytics class-folder tree from the IDX files.

    Args:
        source: directory with the four IDX files; None resolves $FMNIST_SOURCE, the project raw dir,
            Debian's package, then downloads.
        out: tree to write; default `datasets/fashion-mnist`.
        val_size: images held out from train for model selection (stratified); 0 = no val/ split.
        split_seed: seed of the hold-out.
        force: rebuild even when the manifest says the tree is up to date.
        verify: check the sources against the official checksums.
        workers: writer processes (default: all cores).
        progress: show a progress bar and the result line (stderr).
        link: make `yolo ... data=fashion-mnist` find the tree (default: only for the default `out`).

    Returns:
        The absolute path of the tree.
    """
    check_options("prepare", dict(source=source, out=out, val_size=val_size, split_seed=split_seed, force=force,
                                  verify=verify, workers=workers, link=link))  # fmt: skip
    val, seed = val_size, split_seed
    out = Path(out or DEFAULTS.out).absolute()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is a file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create output directory: {e.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise DataError(f"{out.parent}: output directory is not writable")
    t0 = time.perf_counter()
    with _lock(out):
        _clean_stale(out)
        old = read_manifest(out) if out.is_dir() else None
        src = None
        if not force and old:
            with contextlib.suppress(FmnistError):
                src = resolve_source(source, download=False)
            if _up_to_date(old, val, seed, verify, src):
                _report(f"{out} is up to date ({old['total']} images); force=True rebuilds it", progress)
                return _finish(out, link)
        src = src or resolve_source(source)
        arrays = load(src, verify)
        if not force and _up_to_date(old, val, seed, verify, src, arrays):
            _report(
                f"{out} is up to date ({old['total']} images, same source payloads); force=True rebuilds it", progress
            )
            return _finish(out, link)
        layout = plan(arrays.train_labels, arrays.test_labels, val, seed)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        try:
            tmp.mkdir()
            digests = write_tree(tmp, arrays, layout, workers or os.cpu_count() or 1, progress)
            info, listing = manifest(arrays, layout, val, seed, verify, digests)
            for name, text in ((CHECKSUMS, listing), (MANIFEST, json.dumps(info, indent=1) + "\n")):
                with naming(tmp / name):
                    (tmp / name).write_text(text)
            _swap(tmp, out)
        except OSError as e:
            raise DataError(f"{e.filename or out}: cannot write tree: {e.strerror or e}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = {s: sum(c.values()) for s, c in info["counts"].items()}
    _report(
        f"Prepared {out} from {src.dir} ({src.origin}): "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + f" in {time.perf_counter() - t0:.1f}s",
        progress,
    )
    return _finish(out, link)


def _finish(out: Path, link: bool | None) -> Path:
    from .link import ensure_link

    if link or (link is None and out == DEFAULTS.out.absolute()):
        ensure_link(out)
    return out


def _report(message: str, enabled: bool) -> None:
    if enabled:
        log.info(message)


def ensure_tree(data: str | Path | None) -> Path:
    """The tree a command uses: the default one, prepared when missing; any other must exist (a path, or a name
    under Ultralytics' datasets_dir, resolved the way Ultralytics does)."""
    if data is None or Path(data).absolute() == DEFAULTS.out.absolute():
        tree = DEFAULTS.out.absolute()
        return tree if read_manifest(tree) else prepare()
    tree = find_tree(data)
    if tree is None:
        raise ConfigError(f"{data}: dataset directory not found (run `fmnist-yolo prepare` or pass data=DIR)")
    return tree
