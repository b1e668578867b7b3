"""Worker processes of the data stage run work in other processes."""

import os

from fmnist_yolo.data.workers import pool


def _pid(_):
    return os.getpid()


def test_pool_runs_in_other_processes():
    with pool(2) as executor:
        pids = set(executor.map(_pid, range(4)))
    assert pids and os.getpid() not in pids
