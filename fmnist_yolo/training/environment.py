"""What a run ran on beyond the package versions: the project's commit, the seeds, determinism, threads and GPU.

train.py records it in fmnist_yolo.json (`environment`) when training starts; reproduction.py compares with it.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding fmnist_yolo/, when run from one
GIT_TIMEOUT_S = 10  # a git that hangs (a network filesystem, a lock) must not hold up training


def _git(*args: str) -> str | None:
    """git's output in the project root, or None when git or the repository is not there."""
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def git_state() -> dict:
    """{commit, dirty, diff_sha256} of the checkout fmnist_yolo runs from; all None when it is not a checkout.

    dirty: tracked files differ from the commit (untracked files are not looked at: a scan of a 70k-image tree
    would cost seconds); diff_sha256 pins those changes, so that two dirty runs can be told the same or not.
    A package installed elsewhere (site-packages inside some other repository) is not its repository's commit.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != PROJECT_ROOT:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    diff = _git("diff", "HEAD", "--binary")
    dirty = None if diff is None else bool(diff)
    digest = hashlib.sha256(diff.encode()).hexdigest() if diff else None
    return {"commit": commit, "dirty": dirty, "diff_sha256": digest}


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file (pretrained weights), None when it is not a file."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def environment(trainer) -> dict:
    """What the running trainer ran with: commit, seeds, Ultralytics' deterministic flag, torch's threads, and on a
    GPU its name and the CUDA and cuDNN versions.

    seed is Ultralytics' `seed`; init_seed what its trainer seeds Python, NumPy and torch with (seed + 1 + RANK: the
    seed itself in a single process, RANK -1); fast=True shuffles and augments each epoch with seed and the epoch.
    """
    import torch
    from ultralytics.utils import RANK

    seed = int(trainer.args.seed)
    device = getattr(trainer, "device", None)
    gpu = None
    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    return {**git_state(), "seed": seed, "init_seed": seed + 1 + RANK, "deterministic":
            bool(trainer.args.deterministic), "torch_threads": torch.get_num_threads(), "gpu": gpu}  # fmt: skip
