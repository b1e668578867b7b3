"""Faults during preparation: SIGKILL at many points, two prepares at once, a full disk."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist_yolo import prepare
from fmnist_yolo.data import prepare as convert
from fmnist_yolo.data.check import check
from tests.conftest import ROOT, one_error, run_cli, synthetic_arrays, tree_digest, write_source

OPTS = ["verify=False", "val_size=500", "workers=2"]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    """7,000 synthetic images: enough that writing them takes a while to interrupt."""
    d = tmp_path_factory.mktemp("big") / "src"
    write_source(d, synthetic_arrays(per_class_train=600, per_class_test=100))
    return d


def _prepare_cmd(source: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "fmnist_yolo", "prepare", f"source={source}", f"out={out}",
            f"split_seed={seed}", "force=True", *OPTS]  # fmt: skip


def _written(out: Path) -> int:
    """PNGs in the temporary tree(s) of a running prepare."""
    n = 0
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            n += sum(len(os.listdir(c)) for s in os.scandir(tmp) if s.is_dir() for c in os.scandir(s.path))
        except FileNotFoundError:
            pass
    return n


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _flock(pid: int) -> str | None:
    """'held' or 'waiting' when process `pid` holds or waits for a flock (the kernel's own table), else None."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiting = fields[1] == "->"
        fields = fields[2:] if waiting else fields[1:]
        if fields[0] == "FLOCK" and int(fields[3]) == pid:
            return "waiting" if waiting else "held"
    return None


def _until(condition, timeout: float = 30, what: str = "") -> None:
    """Poll `condition` (an event in another process, not a time) until it holds; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.001)


def _kill_when(cmd: list[str], ready, timeout: float = 60) -> bool:
    """Start `cmd`, SIGKILL it as soon as `ready(proc)` holds; True if it was killed (not finished first)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready(proc) and time.monotonic() < deadline:
        time.sleep(0.001)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    if sys.platform == "linux":  # workers die with their parent (PR_SET_PDEATHSIG): no orphan keeps writing
        _until(lambda: not [w for w in workers if _alive(w)], 10, "the writer processes to die with their parent")
    return proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_at_many_points_keeps_previous_tree(big_source, tmp_path):
    out, ref = tmp_path / "fm", tmp_path / "ref"
    run = dict(source=big_source, verify=False, val_size=500, workers=2, progress=False)
    prepare(out=ref, split_seed=1, **run)  # what an uninterrupted seed-1 run produces
    new = tree_digest(ref)
    prepare(out=out, split_seed=0, **run)
    old = tree_digest(out)
    total = 7000
    manifest = out / "manifest.json"
    before = manifest.read_bytes()
    # each point is an event seen from outside (the process's lock, files on disk), not a time
    points = {
        "at start": lambda proc: True,
        "lock taken": lambda proc: _flock(proc.pid) == "held",
        "temp tree created": lambda proc: bool(list(out.parent.glob(f".{out.name}.tmp-*"))),
        "10% written": lambda proc: _written(out) >= total * 0.10,
        "30% written": lambda proc: _written(out) >= total * 0.30,
        "50% written": lambda proc: _written(out) >= total * 0.50,
        "70% written": lambda proc: _written(out) >= total * 0.70,
        "90% written": lambda proc: _written(out) >= total * 0.90,
        "all written": lambda proc: _written(out) >= total,
        "swapped, old tree being removed": lambda proc: manifest.exists() and manifest.read_bytes() != before,
    }
    outcomes = {}
    for name, ready in points.items():
        killed = _kill_when(_prepare_cmd(big_source, out, seed=1), ready)
        digest = tree_digest(out)
        outcomes[name] = "old" if digest == old else "new" if digest == new else "MIXED"
        assert outcomes[name] != "MIXED", f"killed at {name}: tree is neither the old nor the new one"
        if (name.endswith("written") and name != "all written") or name in ("at start", "lock taken"):
            assert killed and outcomes[name] == "old", f"killed at {name}: {outcomes[name]}"
        if outcomes[name] == "new":  # the run got past its atomic swap: restore the old tree for the next point
            prepare(out=out, split_seed=0, force=True, **run)
    print("kill outcomes:", outcomes)
    assert list(outcomes.values()).count("old") >= 7, outcomes
    # The next run cleans up after the killed ones and produces the same tree as an uninterrupted run
    r = subprocess.run(_prepare_cmd(big_source, out, seed=1), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert tree_digest(out) == new and check(out).empty
    assert not list(out.parent.glob(f".{out.name}.tmp-*")) and not list(out.parent.glob(f".{out.name}.old-*"))


def test_concurrent_prepares_serialise(source, tmp_path):
    """Two prepares of one output at once: the second waits for the lock, and the tree is whole."""
    out = tmp_path / "fm"
    run = dict(source=source, out=out, verify=False, val_size=10, workers=1, progress=False)
    prepare(split_seed=0, **run)
    before = tree_digest(out)
    with convert._lock(out):  # hold the lock as another prepare would
        argv = ["prepare", f"source={source}", f"out={out}", "verify=False", "val_size=10", "split_seed=1", "workers=1"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whichever the environment installed
        proc = subprocess.Popen([sys.executable, "-m", "fmnist_yolo", *argv], cwd=tmp_path, stderr=subprocess.PIPE,
                                text=True, env=env)  # fmt: skip
        waiting = proc.stderr.readline()
        assert "Waiting for another prepare" in waiting
        # blocked in the kernel on our lock (its own table says so), and nothing of its run written meanwhile
        _until(lambda: _flock(proc.pid) == "waiting", 30, "the second prepare to block on the lock")
        assert proc.poll() is None and not list(tmp_path.glob(".fm.tmp-*")) and tree_digest(out) == before
    assert proc.wait(timeout=60) == 0
    ref = prepare(**{**run, "out": tmp_path / "ref"}, split_seed=1)
    assert tree_digest(out) == tree_digest(ref) and check(out).empty


def test_concurrent_prepares_racing(source, tmp_path):
    """Both started together: each either waits or finds the tree up to date; never a broken tree."""
    out = tmp_path / "fm"
    cmd = [sys.executable, "-m", "fmnist_yolo", "prepare", f"source={source}", f"out={out}", "verify=False",
           "val_size=10", "workers=1", "force=True"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whichever the environment installed
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert check(out).empty and not list(tmp_path.glob(".fm.tmp-*"))


@pytest.fixture
def good_tree(source, tmp_path):
    out = prepare(source=source, out=tmp_path / "fm", verify=False, val_size=10, workers=1, progress=False)
    return out, tree_digest(out)


@pytest.mark.parametrize("where", ["image", "manifest"])
def test_disk_full(where, source, good_tree, monkeypatch, capsys):
    out, digest = good_tree
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "image":

        def write_chunk(root, names, images):
            full.filename = os.path.join(root, names[0])
            raise full

        monkeypatch.setattr(convert, "_write_chunk", write_chunk)
    else:
        real = Path.write_text

        def write_text(self, *a, **k):
            if self.name == convert.MANIFEST:
                full.filename = str(self)
                raise full
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "write_text", write_text)
    code, _, err = run_cli(["prepare", f"source={source}", f"out={out}", "verify=False", "force=True",
                            "workers=1", "val_size=10", "split_seed=3"], capsys)  # fmt: skip
    last = one_error(err)  # (after the progress counter)
    assert code == 1 and err.endswith(last + "\n") and "No space left on device" in last, err
    assert last.startswith(f"Error: {out.parent}/.fm.tmp-")  # names the file it could not write
    assert tree_digest(out) == digest and not list(out.parent.glob(".fm.tmp-*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: a filesystem that really fills up (root only; elsewhere test_disk_full's injected errors)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_for_real(workers, source, small_disk, capsys):
    """A real ENOSPC carries no file name: the error still names the file being written, and the tree stays."""
    out = prepare(source=source, out=small_disk / "fm", verify=False, val_size=10, workers=1, progress=False)
    digest = tree_digest(out)
    st = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))  # 64 KiB left
    code, _, err = run_cli(["prepare", f"source={source}", f"out={out}", "verify=False", "force=True",
                            f"workers={workers}", "val_size=10", "split_seed=3"], capsys)  # fmt: skip
    last = one_error(err)
    assert code == 1 and "No space left on device" in last, err
    named = last.removeprefix("Error: ").split(": cannot write tree")[0]
    assert named.startswith(f"{small_disk}/.fm.tmp-") and named.endswith(".png"), last  # the image, not the tree
    assert tree_digest(out) == digest and not list(small_disk.glob(".fm.tmp-*"))
