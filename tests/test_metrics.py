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


def test_evaluation_reports_ece(labels):
    ev = _evaluation(labels)
    expected = metrics.ece(ev.predictions["confidence"], ev.predictions["correct"])
    assert ev.ece == pytest.approx(expected) and ev.summary()["ece"] == pytest.approx(expected)
    assert ev.calibration["count"].sum() == len(ev.predictions)
