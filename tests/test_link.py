"""The datasets_dir link that lets `yolo ... data=fashion-mnist` find the tree: made once, never replacing."""

import logging

import pytest

from fmnist_yolo.data.link import link_for_ultralytics


@pytest.fixture(autouse=True)
def _info(caplog):
    caplog.set_level(logging.INFO, logger="fmnist_yolo")


def test_link_made_and_says_how_to_undo(tmp_path, caplog):
    tree = tmp_path / "project" / "fashion-mnist"
    tree.mkdir(parents=True)
    link = link_for_ultralytics(tree, tmp_path / "datasets")
    assert link == tmp_path / "datasets" / "fashion-mnist" and link.is_symlink() and link.resolve() == tree.resolve()
    said = caplog.text
    assert f"Linked {link} -> {tree.resolve()}" in said and f"undo with: rm {link}" in said
    caplog.clear()
    assert link_for_ultralytics(tree, tmp_path / "datasets") == link  # again: nothing to do, nothing said
    assert caplog.text == ""


def test_existing_name_is_never_replaced(tmp_path, caplog):
    tree = tmp_path / "project" / "fashion-mnist"
    tree.mkdir(parents=True)
    datasets = tmp_path / "datasets"
    theirs = datasets / "fashion-mnist"
    theirs.mkdir(parents=True)
    (theirs / "keep.txt").write_text("the user's own copy")
    assert link_for_ultralytics(tree, datasets) is None
    assert not theirs.is_symlink() and (theirs / "keep.txt").read_text() == "the user's own copy"
    said = caplog.text
    assert "already exists and is not this tree, so it was left alone" in said and f"data={tree.resolve()}" in said
    other = tmp_path / "other"
    other.mkdir()
    theirs_link = tmp_path / "datasets2" / "fashion-mnist"
    theirs_link.parent.mkdir()
    theirs_link.symlink_to(other)  # a link to another tree (another checkout): also left alone
    assert link_for_ultralytics(tree, theirs_link.parent) is None and theirs_link.resolve() == other.resolve()
    dangling = tmp_path / "datasets3" / "fashion-mnist"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "gone")  # even a dangling one
    assert link_for_ultralytics(tree, dangling.parent) is None and dangling.is_symlink()
