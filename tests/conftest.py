"""Shared fixtures: tiny synthetic IDX sources (like torchvision's MNISTTestCase) and the real tree."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Keep Ultralytics' settings (and the dataset link prepare makes) out of the user's real config.
# Must happen before anything imports ultralytics.
_YOLO_CFG = Path(tempfile.mkdtemp(prefix="fmnist-yolo-tests-"))
atexit.register(shutil.rmtree, _YOLO_CFG, ignore_errors=True)  # one per session; none left behind in /tmp
os.environ["YOLO_CONFIG_DIR"] = str(_YOLO_CFG)
os.environ["YOLO_OFFLINE"] = "true"  # no network here; keeps Ultralytics from trying

from fmnist_yolo import config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = {key: name for key, (name, _, _) in config.SOURCE_FILES.items()}


def images_idx(images: np.ndarray, magic: int = 0x803) -> bytes:
    """IDX3 bytes for an (N, H, W) uint8 array."""
    n, h, w = images.shape
    return struct.pack(">IIII", magic, n, h, w) + images.astype(np.uint8).tobytes()


def labels_idx(labels: np.ndarray, magic: int = 0x801) -> bytes:
    """IDX1 bytes for an (N,) uint8 array."""
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def synthetic_arrays(per_class_train: int = 8, per_class_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images with shuffled, balanced labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per)).astype(np.uint8)
        out[f"{split}_images"] = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        out[f"{split}_labels"] = labels
    return out


def learnable_arrays(per_class_train: int = 20, per_class_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Images a tiny model learns within epochs: class c is a bright bar at a class-specific place, over noise.

    Train them with fliplr=0: a mirrored bar is another class's.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per)).astype(np.uint8)
        images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            r0, c0 = 3 + (c // 5) * 12, 2 + (c % 5) * 5
            images[i, r0 : r0 + 10, c0 : c0 + 4] = 230
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def write_source(directory: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, Path]:
    """Write the four IDX files under their official names; return key -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in arrays.items():
        data = images_idx(array) if key.endswith("images") else labels_idx(array)
        path = directory / (NAMES[key] + (".gz" if gz else ""))
        # mtime=0 keeps the gzip bytes, and so their MD5, deterministic
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths[key] = path
    return paths


def tree_digest(tree: Path) -> str:
    """One hash over every file's relative path and bytes."""
    h = hashlib.sha256()
    for p in sorted(Path(tree).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(tree)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def arrays():
    return synthetic_arrays()


@pytest.fixture
def source(tmp_path, arrays):
    """A directory with four synthetic .gz IDX files."""
    d = tmp_path / "src"
    write_source(d, arrays)
    return d


@pytest.fixture
def trusted(monkeypatch, source, arrays):
    """Make the synthetic source's checksums the 'official' ones (as if it were the real release)."""
    table = {}
    for key, (name, _, _) in config.SOURCE_FILES.items():
        raw = (source / f"{name}.gz").read_bytes()
        table[key] = (name, hashlib.md5(raw).hexdigest(), hashlib.sha256(gzip.decompress(raw)).hexdigest())
    monkeypatch.setattr("fmnist_yolo.data.sources.SOURCE_FILES", table)
    return table


@pytest.fixture(scope="session", autouse=True)
def no_tracking_unless_asked():
    """MLflow is installed with the dev set-up: runs track only in the tests that ask (mlflow=True)."""
    from ultralytics.utils import SETTINGS

    SETTINGS.update(mlflow=False)


@pytest.fixture(scope="session")
def ultralytics_datasets_dir():
    """Point the (test-private) Ultralytics settings' datasets_dir at a temp dir."""
    from ultralytics.utils import SETTINGS

    d = _YOLO_CFG / "datasets"
    SETTINGS.update(datasets_dir=str(d))
    return d


@pytest.fixture(scope="session")
def real_tree(ultralytics_datasets_dir):
    """The project's prepared tree from the real data (what `make test` prepares).

    Only data that is nowhere to be had (no source directory, no network) skips, and never in CI, whose set-up
    installs it; a checksum or IDX error, or any other failure, fails the tests that need the tree.
    """
    from fmnist_yolo import prepare
    from fmnist_yolo.errors import ChecksumError, FmnistError, IDXError

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return prepare(progress=False)
    except (ChecksumError, IDXError):
        raise
    except FmnistError as e:
        if os.environ.get("CI") or "download" not in str(e):
            raise
        pytest.skip(f"real Fashion-MNIST not available: {e}")
    finally:
        os.chdir(cwd)


SYNTHETIC_RUN = {"model": "yolo11n-cls.yaml", "imgsz": 28, "batch": 16, "plots": False, "workers": 0, "device": "cpu"}
TINY = {"model": "yolo11n-cls.yaml", "epochs": 2, "batch": 32, "plots": False, "workers": 0, "fraction": 0.01}


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    """The session's runs/ directory."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def tiny_run(real_tree, runs_root):
    """A tiny real run made in the test session: 2 epochs on 1% of the real training images."""
    import fmnist_yolo

    return fmnist_yolo.train(**TINY, data=str(real_tree), project=str(runs_root / "classify"), name="tiny")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A synthetic tree and a 3-epoch run on it that selects best.pt on val top-1."""
    import fmnist_yolo
    from fmnist_yolo import prepare

    root = tmp_path_factory.mktemp("evaluate")
    write_source(root / "src", synthetic_arrays())
    tree = prepare(source=root / "src", out=root / "tree", val_size=20, verify=False, workers=1, progress=False)
    fitness = []
    record = {"on_fit_epoch_end": lambda t: fitness.append((t.fitness, t.metrics["metrics/accuracy_top1"],
                                                            t.metrics["metrics/accuracy_top5"]))}  # fmt: skip
    run = fmnist_yolo.train(**SYNTHETIC_RUN, epochs=3, data=str(tree), project=str(root / "runs"), name="top1",
                            select_on="top1", callbacks=record)  # fmt: skip
    run.fitness = fitness
    return tree, run


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `fmnist-yolo ARGV` in-process; return (exit code, stdout, stderr)."""
    from fmnist_yolo.cli import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse's --help and usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def require(component: str, program: bool = False):
    """Skip when an optional component (a Python module, or with program=True a program on PATH) is absent; in CI,
    whose set-up installs every one of them, its absence fails instead."""
    import importlib
    import shutil

    try:
        if program:
            if shutil.which(component) is None:
                raise ImportError(f"{component} is not on PATH")
            return component
        return importlib.import_module(component)
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{component} is missing in CI: {e}")
        pytest.skip(f"{component} not installed: {e}")


def write_checkpoint(path: Path, nc: int = 10, task: str = "classify") -> Path:
    """A small real Ultralytics checkpoint (untrained yolo11n-cls, or a detection model) at `path`."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel

    torch.manual_seed(0)
    model = ClassificationModel("yolo11n-cls.yaml", nc=nc, verbose=False) if task == "classify" else \
        DetectionModel("yolo11n.yaml", nc=nc, verbose=False)  # fmt: skip
    model.names = {i: f"class{i}" for i in range(nc)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.half(), "epoch": -1, "optimizer": None, "train_args": {"task": task}}, path)
    return path


def plain_ultralytics_copy(run: Path, dest: Path) -> Path:
    """The run as a plain `yolo classify train` would leave it: Ultralytics' files only."""
    import shutil

    shutil.copytree(run, dest)
    for name in ("fmnist_yolo.json", "test_predictions.csv", "report.md", "report"):
        p = dest / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


def one_error(err: str) -> str:
    """The one `Error: ...` line of a failed command's stderr; fails on a traceback or any other error line."""
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and err.count("Error:") == 1, err[-3000:]
    return errors[0]


PY = sys.executable


def cpu_flags_say_bf16() -> bool:
    """Whether the CPU's own flags (/proc/cpuinfo) say it computes bf16 natively: avx512_bf16 or amx_bf16 on x86,
    bf16 on Arm. The expected answer for compat.cpu_has_bf16, taken from outside it; skips where there are no flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo: the CPU's flags are unknown here")
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
