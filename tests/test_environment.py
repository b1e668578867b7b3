"""What a run ran on: the checkout's commit and uncommitted changes (or none), and file hashes."""

import hashlib
import subprocess

from fmnist_yolo.training import environment
from fmnist_yolo.training.environment import file_sha256, git_state


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)  # fmt: skip


def test_git_state_pins_the_commit_and_its_uncommitted_changes(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    monkeypatch.setattr(environment, "PROJECT_ROOT", repo.resolve())
    clean = git_state()
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["diff_sha256"] is None
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    dirty = git_state()
    assert dirty["commit"] == clean["commit"] and dirty["dirty"] is True and len(dirty["diff_sha256"]) == 64
    (repo / "pkg" / "a.py").write_text("x = 3\n")
    assert git_state()["diff_sha256"] != dirty["diff_sha256"]  # other changes, another hash
    (repo / "untracked.py").write_text("y = 1\n")
    assert (
        git_state()["diff_sha256"]
        == hashlib.sha256(
            subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--binary"], capture_output=True).stdout
        ).hexdigest()
    )  # untracked files are not looked at

    # installed inside some other repository (a .venv in another checkout): not that repository's commit
    monkeypatch.setattr(environment, "PROJECT_ROOT", (repo / "pkg").resolve())
    assert git_state() == {"commit": None, "dirty": None, "diff_sha256": None}
    monkeypatch.setattr(environment, "PROJECT_ROOT", tmp_path / "no-repo")
    assert git_state() == {"commit": None, "dirty": None, "diff_sha256": None}


def test_file_sha256(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    assert file_sha256(tmp_path / "w.pt") == hashlib.sha256(b"weights").hexdigest()
    assert file_sha256(tmp_path / "missing.pt") is None and file_sha256(tmp_path) is None
