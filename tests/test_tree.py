"""The tree contract: manifest, file list, counts checked before a tree is used."""

import pytest

from fmnist_yolo import prepare
from fmnist_yolo.data.tree import check_counts, counts_on_disk, manifest_checksum, read_listing, read_manifest
from fmnist_yolo.errors import DataError


@pytest.fixture
def tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "fm", val_size=10, verify=False, workers=1, progress=False)


def test_manifest_listing_and_counts_agree(tree):
    manifest = read_manifest(tree)
    listing = read_listing(tree, manifest)
    assert len(listing) == manifest["total"] == 110
    for split, counts in manifest["counts"].items():
        assert counts_on_disk(tree, split) == counts
    check_counts(tree)
    assert len(manifest_checksum(tree)) == 64


def test_a_missing_image_is_caught_by_the_count(tree):
    victim = next((tree / "train" / "2_pullover").glob("*.png"))
    victim.unlink()
    with pytest.raises(DataError, match="2_pullover: 6 images, the manifest says 7"):
        check_counts(tree)


def test_a_tree_without_manifest_is_the_users_own(tree):
    (tree / "manifest.json").unlink()
    assert read_manifest(tree) is None and manifest_checksum(tree) is None
    check_counts(tree)  # nothing to compare with: not checked


def test_an_edited_file_list_is_refused(tree):
    listing = tree / "files.sha256"
    listing.write_text(listing.read_text().replace("train/", "train//", 1))
    with pytest.raises(DataError, match="files.sha256: does not match the hash recorded in manifest.json"):
        read_listing(tree, read_manifest(tree))


def test_content_checksum_is_what_the_tree_holds_not_where_its_sources_lay(tree, source, tmp_path):
    """A copy of the sources elsewhere, with other mtimes (a download on another machine): the manifest file differs,
    its content checksum does not; another hold-out changes both."""
    import os
    import shutil

    from fmnist_yolo.data.tree import content_checksum

    copy = shutil.copytree(source, tmp_path / "elsewhere" / "src")
    for f in copy.iterdir():
        os.utime(f, (1e9, 1e9))
    again = prepare(
        source=copy, out=tmp_path / "elsewhere" / "fm", val_size=10, verify=False, workers=1, progress=False
    )
    assert manifest_checksum(again) != manifest_checksum(tree)
    assert content_checksum(again) == content_checksum(tree) and len(content_checksum(tree)) == 64
    other = prepare(source=copy, out=tmp_path / "other", val_size=20, verify=False, workers=1, progress=False)
    assert content_checksum(other) != content_checksum(tree)
    assert content_checksum(tmp_path / "nothing") is None


def test_a_missing_class_folder_counts_zero(tree):
    import shutil

    shutil.rmtree(tree / "test" / "9_ankle_boot")
    assert counts_on_disk(tree, "test")["9_ankle_boot"] == 0 and counts_on_disk(tree, "test")["0_tshirt_top"] == 3
    with pytest.raises(DataError, match="9_ankle_boot: 0 images, the manifest says 3"):
        check_counts(tree)


def test_counts_of_a_class_the_manifest_has_and_the_layout_does_not(tree):
    import json

    manifest = json.loads((tree / "manifest.json").read_text())
    manifest["counts"]["test"]["10_hat"] = 1  # e.g. a manifest written for another dataset
    (tree / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="10_hat: 0 images, the manifest says 1"):
        check_counts(tree)
    manifest["counts"]["test"]["10_hat"] = 0  # none there, none expected: agreed
    (tree / "manifest.json").write_text(json.dumps(manifest))
    check_counts(tree)
    del manifest["counts"]  # a manifest without counts: nothing to compare with
    (tree / "manifest.json").write_text(json.dumps(manifest))
    check_counts(tree)


def test_an_unreadable_file_list_is_one_error_naming_it(tree):
    (tree / "files.sha256").unlink()
    with pytest.raises(DataError, match="files.sha256: cannot read the file list: No such file"):
        read_listing(tree, read_manifest(tree))
