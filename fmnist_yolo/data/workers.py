"""Worker processes for the data stage (prepare writes, check reads): forked, and dying with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from concurrent.futures import ProcessPoolExecutor


def _mp_context():
    import multiprocessing

    # fork starts workers in milliseconds; spawn (elsewhere) re-imports numpy and cv2 in each.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)


def pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes that die with this one: a killed prepare leaves no orphan writing into its temp tree."""
    return ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_die_with_parent, initargs=(os.getpid(),))


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(pr_set_pdeathsig, 9)  # SIGKILL
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
