"""The tree contract: manifest, file list, counts checked before a tree is used."""

import pytest

from fmnist_yolo import prepare
from fmnist_yolo.data.tree import (
    check_counts,
    counts_on_disk,
    manifest_checksum,
    read_listing,
    read_manifest,
    repair_hint,
    val_split,
)
from fmnist_yolo.errors import ConfigError, DataError


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


@pytest.mark.filterwarnings("ignore:.*load only files you trust")  # the checkpoint written in tmp_path
def test_the_val_split_is_found_once_as_ultralytics_finds_it(tree, tmp_path):
    """val/, else validation/, else valid/ (Ultralytics' check_cls_dataset): train's warning and record and
    evaluate's split=val all ask data.tree.val_split."""
    from fmnist_yolo.evaluation.evaluate import evaluate
    from fmnist_yolo.training.train import new_record
    from fmnist_yolo.training.weights import Weights
    from tests.conftest import write_checkpoint

    weights = write_checkpoint(tmp_path / "w.pt")
    untrained = Weights("yolo11n-cls.yaml", False, "test")
    assert val_split(tree) == tree / "val"
    (tree / "val").rename(tree / "valid")
    assert val_split(tree) == tree / "valid"
    assert new_record({}, tree, untrained, {}, None).data["model_selection_split"] == "val"
    evaluation = evaluate(weights, "val", tree, imgsz=32, batch=16, workers=0, device="cpu")
    assert len(evaluation.predictions) == 10  # the 10 images of valid/
    (tree / "valid").rename(tree / "elsewhere")
    assert val_split(tree) is None
    assert new_record({}, tree, untrained, {}, None).data["model_selection_split"] == "test"
    with pytest.raises(ConfigError) as e:
        evaluate(weights, "val", tree)
    assert str(e.value) == f"{tree}: no val/ split (prepared with val_size=0); use split=test"


def test_every_stage_that_finds_damage_gives_the_same_repair_hint(tree, capsys):
    """The tree's count check, the trainers (an image Ultralytics skipped, one the fast path cannot decode) and
    `fmnist-yolo check`: one hint, naming the tree and the options to rebuild it with."""
    from types import SimpleNamespace

    from fmnist_yolo.training.fast.data import decode
    from fmnist_yolo.training.stock_trainer import check_all_images_used
    from tests.conftest import run_cli

    hint = repair_hint(tree)
    assert hint == (f"`fmnist-yolo check {tree}` lists the damage; "
                    f"`fmnist-yolo prepare force=True out={tree} val_size=10 split_seed=0` rebuilds it")  # fmt: skip
    assert repair_hint(tree, listed=True) == hint.split("; ")[1]
    victim, kept = sorted((tree / "train" / "2_pullover").glob("*.png"))[:2]
    victim.write_bytes(b"not a png")
    with pytest.raises(DataError) as fast:
        decode([str(kept), str(victim)], workers=1)
    listing = SimpleNamespace(
        base=SimpleNamespace(samples=[(str(kept), 0), (str(victim), 0)]), samples=[[str(kept), 0, None, None]]
    )  # Ultralytics' dataset, the victim dropped
    with pytest.raises(DataError) as stock:
        check_all_images_used(listing, tree / "train", 1.0, "train")
    assert str(fast.value) == f"{victim}: cannot decode image; {hint}"
    assert str(stock.value) == f"{victim}: cannot decode image (1 of 2 in {tree / 'train'} skipped); {hint}"
    code, _, err = run_cli(["check", str(tree), "workers=1"], capsys)
    assert code == 1 and err == f"Error: {tree}: 1 problems (1 truncated); {repair_hint(tree, listed=True)}\n"
    victim.unlink()
    with pytest.raises(DataError) as counted:
        check_counts(tree)
    assert str(counted.value) == f"{victim.parent}: 6 images, the manifest says 7; {hint}"


def test_identity_and_content_checksum_read_exactly_these_manifest_fields(tmp_path):
    """identity: the content fields and each source's path and payload hash; content_checksum: those less the paths
    and the verification flag, canonical JSON hashed. Where sources lay and mtimes never change it; content does."""
    import hashlib
    import json

    from fmnist_yolo.data.tree import MANIFEST, content_checksum, identity

    def write(**changes):
        manifest = {"files_sha256": "f" * 64, "format": 1, "options": {"val": 10, "seed": 0}, "verified": True,
                    "sources": {"train_images": {"path": "/a/x.gz", "payload_sha256": "p1", "mtime": 5.0},
                                "test_labels": {"path": "/a/y.gz", "payload_sha256": "p2"}, "note": "not a source"},
                    "checksum": "the manifest's own", "version": "0.3.0", **changes}  # fmt: skip
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))
        return content_checksum(tmp_path)

    base = write()
    assert identity(tmp_path) == {
        "files_sha256": "f" * 64, "format": 1, "options": {"val": 10, "seed": 0}, "verified": True,
        "sources": {"train_images": {"path": "/a/x.gz", "payload_sha256": "p1"},
                    "test_labels": {"path": "/a/y.gz", "payload_sha256": "p2"}},
    }  # fmt: skip
    content = {"files_sha256": "f" * 64, "format": 1, "options": {"val": 10, "seed": 0}, "verified": None,
               "sources": {"train_images": "p1", "test_labels": "p2"}}  # fmt: skip
    assert base == hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    moved = {"train_images": {"path": "/b/x.gz", "payload_sha256": "p1", "mtime": 9.0},
             "test_labels": {"path": "/b/y.gz", "payload_sha256": "p2"}}  # fmt: skip
    assert write(sources=moved, verified=False, checksum="other", version="9") == base
    for change in ({"files_sha256": "e" * 64}, {"format": 2}, {"options": {"val": 20, "seed": 0}},
                   {"sources": {**moved, "train_images": {"path": "/a/x.gz", "payload_sha256": "p3"}}}):  # fmt: skip
        assert write(**change) != base, change
    (tmp_path / MANIFEST).write_text("[1, 2]")  # not a manifest
    assert identity(tmp_path) == {} and content_checksum(tmp_path) is None


def test_the_repair_hint_of_a_tree_without_a_manifest(tmp_path):
    from fmnist_yolo.data.tree import repair_hint

    assert repair_hint(tmp_path) == (f"`fmnist-yolo check {tmp_path}` lists the damage; "
                                     f"`fmnist-yolo prepare force=True out={tmp_path}` rebuilds it")  # fmt: skip


def test_prepare_args_rebuild_the_tree_a_manifest_records():
    from fmnist_yolo.data.tree import prepare_args

    manifest = {"options": {"val": 10, "seed": 2}, "verified": False, "format": 1}
    assert prepare_args(manifest) == {"val_size": 10, "split_seed": 2, "verify": False}
    assert prepare_args({"options": {"val": 0}}) == {"val_size": 0}  # only what it records
    assert prepare_args(None) == prepare_args([1]) == prepare_args({}) == {}
