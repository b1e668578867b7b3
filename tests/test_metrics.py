"""Metric tables from label arrays, and predictions saved and reloaded, without a model."""

import numpy as np
import pandas as pd
import pytest

from fmnist_yolo.errors import RunError
from fmnist_yolo.evaluation import metrics
from fmnist_yolo.evaluation.evaluate import Evaluation

NAMES = ["a", "b", "c"]


@pytest.fixture
def labels():
    true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 0, 2, 1, 1])
    return true, pred


def test_confusion_and_per_class_by_hand(labels):
    m = metrics.confusion(*labels, NAMES)
    assert m.to_numpy().tolist() == [[2, 1, 1], [1, 2, 0], [0, 2, 1]]
    assert (m.index.name, m.columns.name) == ("true", "predicted")
    pc = metrics.per_class(m)
    assert pc.loc["a", "precision"] == pytest.approx(2 / 3) and pc.loc["a", "recall"] == pytest.approx(2 / 4)
    assert pc.loc["b", "f1"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert pc["support"].tolist() == [4, 3, 3]
    assert pc.loc["c", "accuracy"] == pytest.approx((1 + 6) / 10)  # c: TP 1, FP 1, FN 2, so TN 6
    assert (pc.loc["c", "most_confused_with"], pc.loc["c", "confused_count"]) == ("b", 2)
    np.testing.assert_allclose(metrics.normalize(m).sum(axis=1), 1.0)


def test_class_never_confused_has_no_partner():
    m = metrics.confusion(np.array([0, 1]), np.array([0, 1]), ["x", "y"])
    pc = metrics.per_class(m)
    assert pc["most_confused_with"].isna().all() and (pc["confused_count"] == 0).all()
    one = metrics.per_class(metrics.confusion(np.array([0, 0]), np.array([0, 0]), ["x"]))  # a single class
    assert one["confused_count"].tolist() == [0] and one["most_confused_with"].isna().all()


def test_top_confusions(labels):
    top = metrics.top_confusions(metrics.confusion(*labels, NAMES), 2)
    assert top[["true", "predicted", "count"]].values.tolist() == [["c", "b", 2], ["a", "b", 1]]
    assert top["share_of_true"].tolist() == pytest.approx([2 / 3, 1 / 4])


def _evaluation(labels) -> Evaluation:
    true, pred = labels
    rng = np.random.default_rng(0)
    probs = rng.random((len(true), 3))
    probs[np.arange(len(true)), pred] += 3  # make `pred` the argmax
    probs /= probs.sum(1, keepdims=True)
    table = pd.DataFrame({"file": [f"f{i}.png" for i in range(len(true))], "true_id": true, "pred_id": pred,
                          "true": np.array(NAMES)[true], "pred": np.array(NAMES)[pred], "confidence": probs.max(1),
                          "correct": true == pred})  # fmt: skip
    table = pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in NAMES])], axis=1)
    return Evaluation("test", "w.pt", float((true == pred).mean()), 1.0, table, NAMES)


def test_predictions_roundtrip(labels, tmp_path):
    ev = _evaluation(labels)
    back = Evaluation.load(ev.save(tmp_path / "p.csv"))
    assert back.names == NAMES and back.top1 == pytest.approx(0.5) and back.top5 == 1.0
    pd.testing.assert_frame_equal(back.predictions, ev.predictions, check_dtype=False)
    pd.testing.assert_frame_equal(back.per_class, ev.per_class)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def _table(true, probs, names) -> pd.DataFrame:
    """A predictions table as evaluate() writes it, from true labels and a probability matrix."""
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(1)
    table = pd.DataFrame({"file": [f"f{i}.png" for i in range(len(true))], "true_id": true, "pred_id": pred,
                          "true": np.array(names)[true], "pred": np.array(names)[pred], "confidence": probs.max(1),
                          "correct": np.asarray(true) == pred})  # fmt: skip
    return pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in names])], axis=1)


def test_misclassified_are_the_most_confident_errors(labels):
    true = np.array([0, 0, 1, 1, 2, 2, 0])
    conf = [0.40, 0.90, 0.50, 0.95, 0.80, 0.60, 0.70]  # errors everywhere but image 5; file order != confidence
    pred = np.array([1, 2, 0, 2, 0, 2, 2])
    probs = np.full((7, 3), 0.0)
    probs[np.arange(7), pred] = conf
    probs[np.arange(7), (pred + 1) % 3] = 1 - np.array(conf)
    ev = Evaluation("test", "w.pt", 0.0, 1.0, _table(true, probs, NAMES), NAMES)
    wrong = ev.misclassified(3)
    assert wrong["file"].tolist() == ["f3.png", "f1.png", "f4.png"]  # 0.95, 0.90, 0.80: not the first 3 errors
    assert wrong["confidence"].tolist() == [0.95, 0.90, 0.80]
    assert len(ev.misclassified(10)) == 6 and "f5.png" not in ev.misclassified(10)["file"].tolist()


def test_top5_counts_a_true_class_ranked_sixth_as_a_miss(tmp_path):
    names = list("abcdefg")  # 7 classes: top-5 can miss
    ranks = np.array([[0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05]] * 4)
    true = np.array([0, 4, 5, 6])  # ranked 1st, 5th, 6th and 7th
    ev = Evaluation.load(Evaluation("test", "w", 0.25, 0.0, _table(true, ranks, names), names).save(tmp_path / "p.csv"))
    assert ev.top1 == pytest.approx(0.25) and ev.top5 == pytest.approx(0.5)


def test_load_rejects_other_csv(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RunError, match="x.csv: not a predictions file"):
        Evaluation.load(tmp_path / "x.csv")


def test_ece_by_hand():
    # 15 bins of width 1/15: 0.95 falls in (14/15, 1], 0.55 in (8/15, 9/15], 0.25 in (3/15, 4/15]
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.25])
    correct = np.array([True, False, True, True, False])
    table = metrics.calibration(conf, correct)
    assert len(table) == 15 and table["count"].sum() == 5
    assert table.loc[[14, 8, 3], "count"].tolist() == [2, 2, 1]
    assert table.loc[[14, 8, 3], "accuracy"].tolist() == [0.5, 1.0, 0.0]
    # |0.5 - 0.95| * 2 + |1 - 0.55| * 2 + |0 - 0.25| * 1, over 5 images
    assert metrics.ece(conf, correct) == pytest.approx((0.45 * 2 + 0.45 * 2 + 0.25) / 5)
    # the edges: 1.0 in the last bin, 0.0 in the first (with 0.05): gaps 0 and |0 - 0.025| for two images
    assert metrics.ece(np.array([1.0, 0.0, 0.05]), np.array([1, 0, 0])) == pytest.approx((0 + 0.025 * 2) / 3)
    assert metrics.ece(np.array([0.7, 0.7]), np.array([True, False]), bins=1) == pytest.approx(0.2)


def test_evaluation_reports_ece():
    """ECE of an Evaluation, worked out by hand (not with the function under test)."""
    true = np.array([0, 1, 1, 2, 0])
    pred = np.array([0, 0, 1, 2, 2])  # correct, wrong, correct, correct, wrong
    conf = np.array([0.9, 0.9, 0.62, 0.62, 0.4])
    probs = np.repeat(((1 - conf) / 2)[:, None], 3, axis=1)
    probs[np.arange(5), pred] = conf
    ev = Evaluation("test", "w.pt", 0.6, 1.0, _table(true, probs, NAMES), NAMES)
    # bins of 1/15: 0.9 in bin 13 (13/15, 14/15], 0.62 in bin 9 (9/15, 10/15], 0.4 in bin 5 (5/15, 6/15]
    # |accuracy - confidence| x images: |0.5 - 0.9| x 2 + |1 - 0.62| x 2 + |0 - 0.4| x 1 = 1.96, over 5 images
    assert ev.ece == pytest.approx(0.392) and ev.headline_figures()["ece"] == pytest.approx(0.392)
    table = ev.calibration
    assert table["count"].tolist() == [0] * 5 + [1, 0, 0, 0, 2, 0, 0, 0, 2, 0]
    assert table.loc[[5, 9, 13], "accuracy"].tolist() == [0.0, 1.0, 0.5]
    assert table.loc[[5, 9, 13], "confidence"].tolist() == pytest.approx([0.4, 0.62, 0.9])


@pytest.mark.filterwarnings("error")  # an empty class is 0, without a division warning
def test_classes_never_true_never_predicted_or_seen_once():
    """Edge classes by hand: e is never true and never predicted (the last index, absent from both arrays), c is
    predicted but never true, b is true once and predicted once (wrongly both times), d once and right."""
    names = ["a", "b", "c", "d", "e"]
    true = np.array([0, 0, 0, 0, 1, 3])
    pred = np.array([0, 1, 2, 2, 0, 3])
    m = metrics.confusion(true, pred, names)
    assert m.to_numpy().tolist() == [[1, 1, 2, 0, 0], [1, 0, 0, 0, 0], [0] * 5, [0, 0, 0, 1, 0], [0] * 5]
    pc = metrics.per_class(m)
    assert pc.index.name == "class" and pc.index.tolist() == names
    # a: TP 1, predicted 2, support 4: precision 1/2, recall 1/4, F1 2 x 1/8 / (3/4) = 1/3 (p + r < 1)
    assert pc.loc["a", ["precision", "recall", "f1"]].tolist() == pytest.approx([0.5, 0.25, 1 / 3])
    assert pc.loc["b", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]  # no TP
    assert pc.loc["c", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]  # never true
    assert pc.loc["d", ["precision", "recall", "f1"]].tolist() == [1.0, 1.0, 1.0]  # one image, one prediction
    assert pc.loc["e", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]  # neither
    assert pc["accuracy"].tolist() == pytest.approx([2 / 6, 4 / 6, 4 / 6, 1.0, 1.0])  # (TP + TN) / 6
    assert pc["support"].tolist() == [4, 1, 0, 1, 0] and pc["support"].dtype.kind == "i"
    assert pc["most_confused_with"].tolist()[:2] == ["c", "a"] and pc["most_confused_with"][2:].isna().all()
    assert pc["confused_count"].tolist() == [2, 1, 0, 0, 0] and pc["confused_count"].dtype.kind == "i"
    shares = metrics.normalize(m)
    assert shares.loc["a"].tolist() == [0.25, 0.25, 0.5, 0.0, 0.0] and shares.loc["d"].tolist() == [0, 0, 0, 1.0, 0]
    assert shares.loc[["c", "e"]].isna().all().all()  # no true images: no shares (not 0, not inf)


def test_per_class_accuracy_and_partners_of_every_class(labels):
    pc = metrics.per_class(metrics.confusion(*labels, NAMES))
    # a: TP 2, FP 1, FN 2, TN 5; b: TP 2, FP 3, FN 1, TN 4; c: TP 1, FP 1, FN 2, TN 6
    assert pc["accuracy"].tolist() == pytest.approx([7 / 10, 6 / 10, 7 / 10])
    assert pc["most_confused_with"].tolist() == ["b", "a", "b"]  # a: b and c once each, the first; b: a once
    assert pc["confused_count"].tolist() == [1, 1, 2]


def test_top_confusions_default_and_short_lists():
    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 4, 400), rng.integers(0, 4, 400)  # all 12 off-diagonal cells filled
    m = metrics.confusion(true, pred, list("abcd"))
    top = metrics.top_confusions(m)
    assert len(top) == 5 and top.index.tolist() == list(range(5)) and "index" not in top.columns
    assert top["count"].tolist() == sorted(m.to_numpy()[~np.eye(4, dtype=bool)].tolist(), reverse=True)[:5]
    sparse = metrics.top_confusions(metrics.confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), list("abc")), 5)
    assert sparse[["true", "predicted", "count"]].values.tolist() == [["a", "b", 1]]  # cells with a count only


@pytest.mark.filterwarnings("error")  # empty bins are NaN without a division warning
def test_calibration_table_layout_and_edges():
    table = metrics.calibration(np.array([0.0, 0.01, 1.0, 1.0000001]), np.array([False, True, True, True]))
    assert list(table.columns) == ["lower", "upper", "count", "confidence", "accuracy", "gap"]
    assert table.index.name == "bin" and table.index.tolist() == list(range(15))
    np.testing.assert_allclose(table["lower"], np.arange(15) / 15)
    np.testing.assert_allclose(table["upper"], np.arange(1, 16) / 15)
    # 0 and 0.01 in the first bin; 1.0 and a float32 softmax's 1.0000001 in the last
    assert table.loc[0, "count"] == 2 and table.loc[14, "count"] == 2 and table["count"].sum() == 4
    assert table.loc[0, "accuracy"] == 0.5 and table.loc[0, "gap"] == pytest.approx(0.005 - 0.5)
    assert table.loc[1:13, "confidence"].isna().all()  # empty bins: no mean
    # a float32 confidence (as the model gives it) is binned by its exact value: 0.6 as float32 is 0.6000000238,
    # above 9/15, so in bin 9 (float32 arithmetic would round 0.6 x 15 to 9.0 and put it in bin 8)
    assert metrics.calibration(np.array([0.6], dtype=np.float32), np.array([True])).loc[9, "count"] == 1


def test_ece_depends_on_the_bins_and_on_one_image():
    conf, correct = np.array([0.1, 0.9]), np.array([False, True])
    assert metrics.ece(conf, correct, bins=1) == pytest.approx(0.0)  # one bin: mean 0.5 against accuracy 0.5
    assert metrics.ece(conf, correct) == pytest.approx(0.1)  # 15 bins: each image on its own
    assert metrics.ece(np.array([0.8]), np.array([True])) == pytest.approx(0.2)  # one image: weighted by 1, not 2
